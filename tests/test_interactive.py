"""Prompt switching with KV-recache: masked multi-block passes, scripted schedules, the job, the live session."""

from __future__ import annotations

import io
import threading

import pytest
import torch
from conftest import REPO, tiny_config
from test_engine import LATENT_HW, cache_for, random_text

from longlive.config import ConfigError, load_config
from longlive.jobs import read_results, run_interactive_job
from longlive.kv_cache import CacheInvariantError, KVCache, frame_visibility_mask
from longlive.pipeline import InputError, PromptSchedule, Switch, VideoConditionalPipeline, plan_blocks
from longlive.session import Session, handle_line, run_terminal
from longlive.video_io import read_frames

TINY_INTERACTIVE = REPO / "configs" / "tiny_interactive.yaml"
A, B, C = "a red square", "it turns into a blue circle", "the circle grows and turns green"


def interactive_config(*overrides: str):
    return load_config(TINY_INTERACTIVE, overrides)


def cache_state(cache: KVCache) -> dict:
    return {
        "keys": cache.keys.clone(),
        "values": cache.values.clone(),
        "slot_frames": list(cache.slot_frames),
        "end_frame": cache.end_frame,
    }


def assert_same_cache(a: dict, b: dict) -> None:
    assert (a["slot_frames"], a["end_frame"]) == (b["slot_frames"], b["end_frame"])
    torch.testing.assert_close(a["keys"], b["keys"], atol=0, rtol=0)
    torch.testing.assert_close(a["values"], b["values"], atol=0, rtol=0)


# -- the cache: one pass over several blocks ----------------------------------------------------------


@pytest.mark.parametrize(
    ("block_sizes", "passes", "cache_frames", "sink_frames"),
    [
        ([3, 3, 3, 1], [[3, 3], [3, 1]], 10, 0),  # global attention, two blocks per pass
        ([2, 2, 2, 2, 2], [[2, 2], [2], [2], [2]], 6, 2),  # sink 2 + window 4: the first pass fills it
        ([1, 3, 3, 3, 2], [[1, 3], [3], [3], [2]], 5, 1),  # sink 1 + window 4, then the ring wraps
    ],
)
@torch.no_grad()
def test_multi_block_pass_matches_full_sequence(tiny_model, block_sizes, passes, cache_frames, sink_frames):
    """A cached rollout whose passes cover several blocks (with the cache's mask) == the masked full forward."""
    arch = tiny_model.arch
    frames = sum(block_sizes)
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(1, frames, arch.in_channels, *LATENT_HW, generator=g)
    timesteps = torch.rand(1, frames, generator=g) * 1000
    text = tiny_model.prepare_text(random_text(arch))
    full = tiny_model(
        latents, timesteps, text, frame_mask=frame_visibility_mask(block_sizes, cache_frames, sink_frames)
    )

    cache = cache_for(tiny_model, cache_frames, sink_frames)
    outputs, start = [], 0
    for sizes in passes:
        span = slice(start, start + sum(sizes))
        tiny_model(torch.randn_like(latents[:, span]), timesteps[:, span] * 0.5, text, cache, start, block_sizes=sizes)
        outputs.append(tiny_model(latents[:, span], timesteps[:, span], text, cache, start, block_sizes=sizes))
        assert (cache.mask is None) == (len(sizes) == 1)
        start += sum(sizes)
    torch.testing.assert_close(torch.cat(outputs, dim=1), full, atol=1e-5, rtol=0)


@torch.no_grad()
def test_rewrite_pass_matches_full_sequence(tiny_model):
    """Rewriting every cached frame in one masked pass (what a recache does) == the masked full forward."""
    arch, sizes = tiny_model.arch, [3, 3, 3, 1]
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(1, 10, arch.in_channels, *LATENT_HW, generator=g)
    timesteps = torch.rand(1, 10, generator=g) * 1000
    text = tiny_model.prepare_text(random_text(arch))
    cache = cache_for(tiny_model, 10, 0)
    start = 0
    for size in sizes:  # a first rollout with other inputs
        tiny_model(
            torch.randn(1, size, arch.in_channels, *LATENT_HW, generator=g), timesteps[:, :size], text, cache, start
        )
        start += size
    rewritten = tiny_model(latents, timesteps, text, cache, 0, block_sizes=sizes)
    full = tiny_model(latents, timesteps, text, frame_mask=frame_visibility_mask(sizes, 10, 0))
    torch.testing.assert_close(rewritten, full, atol=1e-5, rtol=0)


def test_multi_block_pass_may_not_evict_what_it_sees(tiny_model):
    cache = cache_for(tiny_model, 6, 2)  # window of 4
    cache.begin_block(0, 4, [2, 2])
    cache.begin_block(4, 2)
    with pytest.raises(CacheInvariantError, match=r"evicts frames \[4, 5\]"):
        cache.begin_block(6, 4, [2, 2])  # block [6, 8) must see frames 4, 5, which the pass overwrites
    with pytest.raises(CacheInvariantError, match="do not split"):
        cache.begin_block(4, 2, [1, 2])
    cache.begin_block(2, 4, [2, 2])  # rewriting the window's frames evicts nothing
    assert cache.recache_frames() == range(2, 6)


# -- scripted switching ------------------------------------------------------------------------------


def test_switch_index_rounding_and_count():
    blocks = plan_blocks(0, 240, 3)
    schedule = PromptSchedule(("p0", "p1", "p2", "p3", "p4", "p5"), (40, 80, 120, 160, 200))
    assert schedule.effective_frames(blocks) == [42, 81, 120, 162, 201]
    assert [schedule.prompt_at(b) for b in blocks if b.start in (39, 42, 78, 81)] == ["p0", "p1", "p1", "p2"]
    with pytest.raises(InputError) as err:
        PromptSchedule(("p0", "p1", "p2"), (40,))
    assert "3 prompts need 2 switch frames, got 1" in str(err.value) and "\n" not in str(err.value)


def test_switch_frame_indices_validated():
    assert interactive_config().switch_frame_indices == "4, 9"
    for value, message in (("[9, 4]", "must increase"), ("[0]", "must lie in (0, num_output_frames=15)"), ("x", "not")):
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            interactive_config(f"switch_frame_indices={value}")


@pytest.mark.parametrize("context_noise", [0, 200])
@torch.no_grad()
def test_switch_equals_manual_recache(context_noise):
    """A scripted switch at block k == k blocks under A, a recache by hand, the rest under B."""
    cfg = interactive_config(f"context_noise={context_noise}")
    pipe = VideoConditionalPipeline.from_config(cfg)
    scripted = list(pipe.stream_prompts(PromptSchedule((A, B), (7,)), seed=5, decode=False))  # 7 -> block 3, frame 9
    scripted_cache = cache_state(pipe.kv_cache)
    assert [r.prompt for r in scripted] == [A, A, A, B, B]
    assert scripted[3].switch == Switch(block=3, frame=9, prompt=B, recached=(4, 9))

    # By hand: sink 1 + window 5, so after 9 frames the cache holds frames 0 (sink) and 4..8.
    model, blocks = pipe.generator, plan_blocks(0, 15, 3)
    text_a, text_b = (model.prepare_text(pipe.prompts.encode(p)) for p in (A, B))
    pipe._reset_caches(batch_size=1)
    rng = torch.Generator().manual_seed(5)
    manual = []
    for block in blocks[:3]:
        manual.append(pipe._denoise_block(block, text_a, rng))
        pipe._write_context(manual[-1], block, text_a, rng)
    kept = torch.cat(manual, dim=1)[:, 4:9]  # the clean latents of the recached frames
    if context_noise:
        kept = pipe.sampler.add_noise(kept, torch.randn(kept.shape, generator=rng), context_noise)
    timesteps = torch.full((1, 5), float(context_noise))
    model(kept, timesteps, text_b, pipe.kv_cache, start_frame=4, block_sizes=[2, 3])  # blocks [4, 6), [6, 9)
    for block in blocks[3:]:
        manual.append(pipe._denoise_block(block, text_b, rng))
        pipe._write_context(manual[-1], block, text_b, rng)

    assert_same_cache(cache_state(pipe.kv_cache), scripted_cache)
    for ours, theirs in zip(scripted, manual, strict=True):
        torch.testing.assert_close(ours.latents, theirs, atol=0, rtol=0)


@torch.no_grad()
def test_recache_changes_cache():
    """Right after a switch, recaching changes exactly the recached frames' slots; the sink is untouched."""
    snapshots = {}
    outputs = {}
    for recache in (True, False):
        pipe = VideoConditionalPipeline.from_config(interactive_config(f"recache_on_switch={str(recache).lower()}"))
        switch = pipe._switch

        def snapshot_after_switch(*args, pipe=pipe, switch=switch, recache=recache):
            result = switch(*args)
            snapshots[recache] = cache_state(pipe.kv_cache)
            return result

        pipe._switch = snapshot_after_switch
        outputs[recache] = [r.latents for r in pipe.stream_prompts(PromptSchedule((A, B), (9,)), seed=0, decode=False)]

    on, off = snapshots[True], snapshots[False]
    assert on["slot_frames"] == off["slot_frames"] == [0, 6, 7, 8, 4, 5]  # sink | ring of 5
    tokens = 2 * 3
    for slot, frame in enumerate(on["slot_frames"]):
        span = slice(slot * tokens, (slot + 1) * tokens)
        same = torch.equal(on["keys"][:, :, span], off["keys"][:, :, span]) and torch.equal(
            on["values"][:, :, span], off["values"][:, :, span]
        )
        assert same == (frame == 0), f"slot {slot} (frame {frame})"
    for block, (a, b) in enumerate(zip(outputs[True], outputs[False], strict=True)):
        assert torch.equal(a, b) == (block < 3), f"block {block}"


@torch.no_grad()
def test_video_conditional_recache_switch():
    """recache_conditioning recaches the conditioning window under prompt2; off (default) it does not."""
    g = torch.Generator().manual_seed(0)
    video = torch.rand(1, 3, 9, 32, 48, generator=g) * 2 - 1  # -> 3 conditioning latent frames
    results = {}
    for recache in (False, True):
        pipe = VideoConditionalPipeline.from_config(tiny_config(f"recache_conditioning={str(recache).lower()}"))
        results[recache] = list(pipe.stream(A, B, video, seed=0, decode=False))
    assert results[False][1].switch == Switch(block=1, frame=3, prompt=B, recached=None)
    assert results[True][1].switch == Switch(block=1, frame=3, prompt=B, recached=(1, 3))
    assert not torch.allclose(results[True][1].latents, results[False][1].latents, atol=1e-4)


# -- the job -------------------------------------------------------------------------------------


def test_interactive_job(tmp_path):
    data = tmp_path / "prompts.jsonl"
    data.write_text(
        f'{{"prompts": ["{A}", "{B}", "{C}"]}}\n{{"prompts": ["{A}", "{B}"]}}\n{{"prompts": ["{C}", "{B}", "{A}"]}}\n'
    )
    cfg = interactive_config(f"data_path={data}", f"output_folder={tmp_path / 'out'}")
    report = run_interactive_job(cfg, VideoConditionalPipeline.from_config(cfg))

    records = read_results(report.results_path)
    assert [r["status"] for r in records] == ["ok", "failed", "ok"]
    assert len(report.written) == 2
    for record in (records[0], records[2]):
        assert record["switches"] == [{"requested": 4, "frame": 6}, {"requested": 9, "frame": 9}]
        assert read_frames(record["outputs"][0], 57).shape[0] == 4 * 15 - 3
    error = records[1]["error"]
    assert "\n" not in error and f"{data}:2: 2 prompts need 1 switch frames, but switch_frame_indices gives 2" in error


# -- the live session ----------------------------------------------------------------------------


@torch.no_grad()
def test_session_matches_scripted_run(tmp_path):
    """Prompts typed before blocks 2 and 3 give the frames of the scripted run switching at frames 6 and 9."""
    pipe = VideoConditionalPipeline.from_config(interactive_config())
    scripted = list(pipe.stream_prompts(PromptSchedule((A, B, C), (6, 9)), seed=3, decode=True))

    limit = pipe.cfg.num_output_frames
    session = Session(pipe, A, seed=3, output=tmp_path / "live.mp4", preview=tmp_path / "live.png", max_frames=limit)
    typed = {2: B, 3: C}  # block index -> the line typed before it starts
    latents = []
    for block in range(5):
        if block in typed:
            handle_line(session, typed[block], io.StringIO())
        latents.append(session.step().latents[0])
    assert session.step() is None  # max_frames reached; the mp4 is finished

    for ours, theirs in zip(latents, scripted, strict=True):
        torch.testing.assert_close(ours, theirs.latents[0], atol=0, rtol=0)
    assert [(s.frame, s.prompt, s.recached) for s in session.switches] == [(6, B, (1, 6)), (9, C, (4, 9))]
    assert set(session.texts) == {A, B, C}
    status = session.status()
    assert (status.block, status.latent_frames, status.frames, status.done) == (4, 15, 57, True) and status.fps > 0
    assert read_frames(tmp_path / "live.mp4", 57).shape == (57, 32, 48, 3)
    assert (tmp_path / "live.png").is_file()


@torch.no_grad()
def test_session_commands_from_a_thread(tmp_path):
    """The terminal loop: lines read in a background thread pause, save, switch and quit the session."""
    pipe = VideoConditionalPipeline.from_config(interactive_config("num_output_frames=300"))
    session = Session(pipe, A, seed=0)
    assert handle_line(session, "/pause", io.StringIO()) and session.paused
    assert session.step() is not None  # step ignores pause: it is the scripted way in
    out = io.StringIO()
    clip = tmp_path / "clip.mp4"

    def lines():
        yield B
        yield f"/save {clip}"
        yield "/bogus"
        yield "/resume"
        while session.status().block < 3:
            threading.Event().wait(0.01)
        yield "/quit"

    status = run_terminal(session, lines(), out)
    assert status.done and 3 <= status.block < 99  # quit long before the 300 frames
    assert read_frames(clip, 9).shape[0] == 9
    text = out.getvalue()
    assert "unknown command /bogus" in text and f"saved {clip}" in text and "block 3 |" in text
    assert session.switches[0].prompt == B


def test_a_failed_command_does_not_end_the_session_input(monkeypatch):
    """A save that fails (a full disk, a missing encoder) answers one line; later commands still arrive."""
    pipe = VideoConditionalPipeline.from_config(interactive_config("num_output_frames=300"))
    session = Session(pipe, A, seed=0)

    def full_disk(path):
        raise OSError(f"no space left on device: {path}")

    monkeypatch.setattr(session, "save", full_disk)
    out = io.StringIO()

    def lines():
        yield "/save clip.mp4"
        while session.status().block < 2 and not session.status().done:
            threading.Event().wait(0.01)
        yield "/quit"

    status = run_terminal(session, lines(), out)
    assert status.done and status.block < 99
    assert "longlive: /save clip.mp4 failed: no space left on device: clip.mp4" in out.getvalue()


def test_cli_interactive_and_session(tmp_path, monkeypatch, capsys):
    """`longlive interactive` runs the example file; `longlive session` reads commands from stdin."""
    from longlive import cli

    out = tmp_path / "out"
    config = ["--config_path", str(TINY_INTERACTIVE), f"output_folder={out}"]
    assert cli.main(["interactive", *config, f"data_path={REPO / 'example' / 'interactive_example.jsonl'}"]) == 0
    assert [len(r["switches"]) for r in read_results(out / "results.jsonl")] == [2, 2]

    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # nothing typed: the session runs to --max-frames
    assert cli.main(["session", *config, "--prompt", A, "--max-frames", "15"]) == 0
    assert read_frames(out / "session.mp4", 57).shape[0] == 57 and (out / "session.png").is_file()
    assert "session over: block 4 | 57 frames" in capsys.readouterr().err

    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert cli.main(["session", *config, "--prompt", " "]) == 2
    assert capsys.readouterr().err.strip().endswith("longlive: error: the prompt is empty")
