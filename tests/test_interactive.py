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
    assert cache.start_recache("window") == range(2, 6)


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
@pytest.mark.parametrize(("mode", "block_sizes"), [("window", [2, 3]), ("longlive", None)])
@torch.no_grad()
def test_switch_equals_manual_recache(mode, block_sizes, context_noise):
    """A scripted switch at block k == k blocks under A, a recache by hand, the rest under B.

    Late switch (frame 9 > window 6): both modes rerun frames 4..8 (LongLive's pass over 3..8 drops
    frame 3, the sink's slot being protected), `window` in their original blocks, `longlive` as one."""
    cfg = interactive_config(f"context_noise={context_noise}", f"recache_mode={mode}")
    pipe = VideoConditionalPipeline.from_config(cfg)
    snapshots = {}
    scripted = stream_around_switch(pipe, PromptSchedule((A, B), (7,)), snapshots, "switch", seed=5)  # 7 -> frame 9
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
        pipe._write_context(manual[-1], block, text_a)
    kept = torch.cat(manual, dim=1)[:, 4:9]  # the clean latents of the recached frames, not noised
    timesteps = torch.full((1, 5), float(context_noise))
    model(kept, timesteps, text_b, pipe.kv_cache, start_frame=4, block_sizes=block_sizes)  # [4, 6), [6, 9) or one
    assert_same_cache(cache_state(pipe.kv_cache), snapshots["switch"]["after"])
    for block in blocks[3:]:
        manual.append(pipe._denoise_block(block, text_b, rng))
        pipe._write_context(manual[-1], block, text_b)

    assert_same_cache(cache_state(pipe.kv_cache), scripted_cache)
    for ours, theirs in zip(scripted, manual, strict=True):
        torch.testing.assert_close(ours.latents, theirs, atol=0, rtol=0)


@pytest.mark.parametrize("mode", ["window", "longlive"])
@torch.no_grad()
def test_recache_changes_cache(mode):
    """Right after a late switch, recaching changes exactly the recached frames' slots; the sink is untouched."""
    snapshots = {}
    outputs = {}
    for recache in (True, False):
        cfg = interactive_config(f"recache_on_switch={str(recache).lower()}", f"recache_mode={mode}")
        pipe = VideoConditionalPipeline.from_config(cfg)
        outputs[recache] = [
            r.latents for r in stream_around_switch(pipe, PromptSchedule((A, B), (9,)), snapshots, recache)
        ]

    on, off = snapshots[True]["after"], snapshots[False]["after"]
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


def stream_around_switch(pipe, schedule, snapshots: dict, key, seed: int = 0) -> list:
    """Run `schedule`, keeping in `snapshots[key]` the cache just before and just after the first switch."""
    switch = pipe._switch

    def snapshot_switch(*args):
        if key not in snapshots:
            snapshots[key] = {"before": cache_state(pipe.kv_cache)}
            result = switch(*args)
            snapshots[key]["after"] = cache_state(pipe.kv_cache)
            return result
        return switch(*args)

    pipe._switch = snapshot_switch
    return list(pipe.stream_prompts(schedule, seed=seed, decode=False))


# -- LongLive's recache, rebuilt from its rule ---------------------------------------------------------


class RecordingPass:
    """A layer view for one forward without the engine's cache: the pass attends to `prefix` K/V [B, P, H, D]
    (cached frames it reads, not rewrites) and to its own, through `mask` [N, P + N]; it records its own K/V."""

    def __init__(self, prefix: tuple[torch.Tensor, torch.Tensor] | None, mask: torch.Tensor) -> None:
        self.prefix, self.mask = prefix, mask
        self.keys = self.values = None

    def write(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.keys, self.values = keys, values
        if self.prefix is None:
            return keys, values
        return torch.cat([self.prefix[0], keys], dim=1), torch.cat([self.prefix[1], values], dim=1)


def masked_forward_kv(model, latents, timestep, text, start_frame, frame_mask, prefix, frame_tokens):
    """Each layer's K/V [B, F*T, H, D] of the frames `latents` [B, F, ...] (at absolute positions from
    `start_frame`) in one forward where frame i sees prefix/own frame j iff `frame_mask` [F, P + F]."""
    mask = frame_mask.repeat_interleave(frame_tokens, 0).repeat_interleave(frame_tokens, 1)
    views = [RecordingPass(None if prefix is None else prefix[layer], mask) for layer in range(len(model.blocks))]
    timesteps = torch.full(latents.shape[:2], float(timestep))
    model.run_blocks(latents, timesteps, text, model.rotary_table(latents.shape, start_frame, latents.device), views)
    return [(view.keys, view.values) for view in views]


def frame_kv(state: dict, frame: int, frame_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """K/V [layers, B, T, H, D] of `frame` in a cache snapshot."""
    slot = state["slot_frames"].index(frame)
    span = slice(slot * frame_tokens, (slot + 1) * frame_tokens)
    return state["keys"][:, :, span], state["values"][:, :, span]


@pytest.mark.parametrize("context_noise", [0, 100])
@torch.no_grad()
def test_context_pass_feeds_clean_latents(context_noise):
    """LongLive's context pass: after each block (conditioning blocks included) the clean latents go in
    with the timestep set to `context_noise`, not noised to it. After a video-conditioned rollout the
    cache holds what one masked forward over all the clean latents at that timestep computes."""
    pipe = VideoConditionalPipeline.from_config(tiny_config(f"context_noise={context_noise}"))
    video = torch.rand(1, 3, 9, 32, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1  # 3 latent frames
    results = list(pipe.stream(A, None, video, seed=0, decode=False))
    clean = torch.cat([r.latents for r in results], dim=1)
    g = pipe.geometry
    mask = frame_visibility_mask([r.block.size for r in results], g.cache_frames, g.sink_frames)
    text = pipe.generator.prepare_text(pipe.prompts.encode(A))
    kv = masked_forward_kv(pipe.generator, clean, context_noise, text, 0, mask, None, g.frame_tokens)
    state = cache_state(pipe.kv_cache)
    assert results[0].block.conditioning and state["slot_frames"][0] == 0  # the sink: a conditioning frame
    for f in state["slot_frames"]:
        span = slice(f * g.frame_tokens, (f + 1) * g.frame_tokens)
        keys, values = frame_kv(state, f, g.frame_tokens)
        torch.testing.assert_close(keys, torch.stack([k[:, span] for k, _ in kv]), atol=1e-5, rtol=0)
        torch.testing.assert_close(values, torch.stack([v[:, span] for _, v in kv]), atol=1e-5, rtol=0)


LONGLIVE_SWITCHES = {
    # overrides on the tiny interactive config (sink 2 + window 4, blocks of 3), switch frame
    "late": ((), 9),  # LongLive reruns [3, 9) and keeps [5, 9): frames 3, 4 fall on the protected sinks
    "early": ((), 6),  # c == local_attn_size: reruns [0, 6), two blocks' worth; the sinks are rewritten
    "first_block": ((), 3),  # reruns [0, 3) (window mode would rerun only frame 2)
    "global_attention": (("model_kwargs.local_attn_size=-1",), 6),  # reruns [0, 6)
    "global_sink_false": (("global_sink=false",), 9),  # cache zeroed, reruns [3, 9); sinks become 3, 4
}


@pytest.mark.parametrize("context_noise", [0, 100])
@pytest.mark.parametrize(("overrides", "switch_frame"), LONGLIVE_SWITCHES.values(), ids=LONGLIVE_SWITCHES.keys())
@torch.no_grad()
def test_recache_matches_longlive_rule(overrides, switch_frame, context_noise):
    """The cache right after a switch == LongLive's rule rebuilt by hand: it reruns the last
    min(local_attn_size, c) frames [a, c) (all c under global attention), clean latents at timestep
    `context_noise`, in one forward where every frame sees every other; with the sinks protected (a > 0,
    global_sink) its first S frames are written nowhere and it sees the old sinks' K/V instead; otherwise
    (a == 0, or global_sink false after zeroing) it writes all of [a, c), the first S as sinks."""
    cfg = interactive_config(
        "model_kwargs.sink_size=2", "num_output_frames=12", f"context_noise={context_noise}", *overrides
    )
    pipe = VideoConditionalPipeline.from_config(cfg)
    snapshots = {}
    results = stream_around_switch(pipe, PromptSchedule((A, B), (switch_frame,)), snapshots, "switch")
    before, after = snapshots["switch"]["before"], snapshots["switch"]["after"]
    clean = torch.cat([r.latents for r in results], dim=1)

    local, sink, tokens = cfg.model_kwargs.local_attn_size, pipe.geometry.sink_frames, pipe.geometry.frame_tokens
    c = switch_frame
    a = c - (c if local == -1 else min(local, c))  # LongLive's recache_start_frame
    protected = cfg.global_sink and a > 0  # its is_recompute: the write starts past the sinks
    frames = c - a
    mask = torch.ones(frames, frames, dtype=torch.bool)
    prefix = None
    if protected:
        mask[:, :sink] = False  # the first S rerun frames are never written, so no one sees them
        old = [frame_kv(before, f, tokens) for f in range(sink)]  # the sink frames' K/V as cached before the switch
        layers = range(len(pipe.generator.blocks))
        prefix = [(torch.cat([k[i] for k, _ in old], 1), torch.cat([v[i] for _, v in old], 1)) for i in layers]
        mask = torch.cat([torch.ones(frames, sink, dtype=torch.bool), mask], dim=1)
    text_b = pipe.generator.prepare_text(pipe.prompts.encode(B))
    kv = masked_forward_kv(pipe.generator, clean[:, a:c], context_noise, text_b, a, mask, prefix, tokens)

    written = range(a + sink, c) if protected else range(a, c)
    assert [r.switch.recached for r in results if r.switch] == [(written.start, written.stop)]
    expected = {f: frame_kv(before, f, tokens) for f in range(sink)} if protected else {}
    for f in written:
        span = slice((f - a) * tokens, (f - a + 1) * tokens)
        expected[f] = (torch.stack([k[:, span] for k, _ in kv]), torch.stack([v[:, span] for _, v in kv]))
    assert sorted(f for f in after["slot_frames"] if f >= 0) == sorted(expected)
    for f, (keys, values) in expected.items():
        ours = frame_kv(after, f, tokens)
        torch.testing.assert_close(ours[0], keys, atol=1e-5, rtol=0, msg=f"keys of frame {f}")
        torch.testing.assert_close(ours[1], values, atol=1e-5, rtol=0, msg=f"values of frame {f}")
    if not cfg.global_sink:
        assert after["slot_frames"][:sink] == list(range(a, a + sink))  # the new sinks


# latents[0, :, 0, 1, 2] of the scripted run below, made by the engine before recache_mode existed
# (commit 5c2ca09: the window rule was the only one), float32 on the CPU; re-taken when random generators
# came to be drawn from a generator seeded by `seed` alone (issue 16: the old weights still give the old
# numbers exactly).
# fmt: off
WINDOW_RULE_LATENTS = [
    0.650940, 0.397023, -1.126659, -0.623010, -2.056167, -1.565650, -1.039520, -0.557835,
    -0.550089, -1.676737, -1.288181, -0.740921, -1.087812, -0.002466, -2.422555,
]
# fmt: on


@torch.no_grad()
def test_recache_mode_window_unchanged():
    """recache_mode=window is the engine's rule from before LongLive's was reproduced: the same recached
    frames (sinks never rerun) and the same latents. longlive differs from the first switch on (frame 6,
    an early switch that reruns from frame 0)."""
    latents = {}
    for mode in ("window", "longlive"):
        pipe = VideoConditionalPipeline.from_config(interactive_config(f"recache_mode={mode}"))
        results = list(pipe.stream_prompts(PromptSchedule((A, B, C), (4, 9)), seed=0, decode=False))
        latents[mode] = torch.cat([r.latents for r in results], dim=1)[0, :, 0, 1, 2]
        recached = [r.switch.recached for r in results if r.switch]
        assert recached == ([(1, 6), (4, 9)] if mode == "window" else [(0, 6), (4, 9)])
    torch.testing.assert_close(latents["window"], torch.tensor(WINDOW_RULE_LATENTS), atol=1e-5, rtol=0)
    assert torch.equal(latents["longlive"][:6], latents["window"][:6])
    assert (latents["longlive"][6:] - latents["window"][6:]).abs().min() > 1e-4


@pytest.mark.parametrize("mode", ["window", "longlive"])
@torch.no_grad()
def test_early_switch_and_the_sinks(mode):
    """A switch at frame 3 (<= local_attn_size, right after a short conditioning): LongLive reruns frames
    0..2 and rewrites the two sink frames; window mode reruns frame 2 only and keeps them."""
    after = {}
    for recache in (True, False):
        cfg = interactive_config(
            "model_kwargs.sink_size=2",
            "num_output_frames=6",
            "switch_frame_indices=3",
            f"recache_mode={mode}",
            f"recache_on_switch={recache}",
        )
        pipe = VideoConditionalPipeline.from_config(cfg)
        snapshots = {}
        stream_around_switch(pipe, PromptSchedule((A, B), (3,)), snapshots, "switch")
        after[recache] = snapshots["switch"]["after"]
    tokens = pipe.geometry.frame_tokens
    assert after[True]["slot_frames"][:3] == [0, 1, 2]
    changed = [not torch.equal(*(frame_kv(after[on], f, tokens)[0] for on in (True, False))) for f in range(3)]
    assert changed == ([True, True, True] if mode == "longlive" else [False, False, True])


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
    # An early switch (frame 3 <= local_attn_size 6): LongLive reruns from frame 0, the sink included.
    assert results[True][1].switch == Switch(block=1, frame=3, prompt=B, recached=(0, 3))
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


@pytest.mark.parametrize("mode", ["longlive", "window"])
@torch.no_grad()
def test_session_matches_scripted_run(tmp_path, mode):
    """Prompts typed before blocks 2 and 3 give the frames of the scripted run switching at frames 6 and 9."""
    pipe = VideoConditionalPipeline.from_config(interactive_config(f"recache_mode={mode}"))
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
    first = 0 if mode == "longlive" else 1  # frame 6 <= local_attn_size: LongLive reruns from frame 0
    assert [(s.frame, s.prompt, s.recached) for s in session.switches] == [(6, B, (first, 6)), (9, C, (4, 9))]
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


def test_session_keeps_the_latest_prompts_only(tmp_path):
    """A long session under many prompts keeps the cross-attention caches of the latest few (each is
    tens of MB on the GPU at the published size): memory does not grow with the number of prompts, and a
    prompt typed again after it was dropped still works."""
    from longlive.text_encoder import RecentlyUsed

    pipe = VideoConditionalPipeline.from_config(load_config(TINY_INTERACTIVE, []))
    session = Session(pipe, "prompt 0", seed=0, output=tmp_path / "live.mp4")
    assert isinstance(session.texts, RecentlyUsed)
    session.texts.limit = 3
    for i in range(1, 8):
        session.set_prompt(f"prompt {i}")
        session.step()
    assert list(session.texts) == ["prompt 5", "prompt 6", "prompt 7"]  # the latest three, newest last
    session.set_prompt("prompt 0")  # dropped long ago: encoded again
    assert session.step().prompt == "prompt 0" and "prompt 0" in session.texts and len(session.texts) == 3
    session.close()


def test_session_limit_and_rope_warning(caplog):
    """A limit must leave frames to generate after the conditioning video; an endless session with
    absolute RoPE warns once as it starts (not again for the next session on the pipeline), a short one
    never, and window-relative RoPE never."""
    import logging

    pipe = VideoConditionalPipeline.from_config(interactive_config("num_conditioning_frames=5"))
    video = torch.zeros(1, 3, 5, pipe.cfg.height, pipe.cfg.width)  # 5 video frames -> 2 latent frames
    with pytest.raises(InputError, match=r"^max_frames=2 latent frames leaves nothing to generate .* 2 conditioning"):
        Session(pipe, A, video, max_frames=2)

    def warnings() -> list[str]:
        return [r.message for r in caplog.records if "use_infinite_attention" in r.message]

    with caplog.at_level(logging.WARNING, logger="longlive.pipeline"):
        limited = Session(pipe, A, max_frames=6)
        limited.step()
        limited.close()
        assert warnings() == []
        for _ in range(2):  # a server's sessions share one pipeline
            endless = Session(pipe, A)
            endless.step()
            endless.close()
        assert len(warnings()) == 1 and warnings()[0].startswith("an endless rollout's latent frames")
        infinite = VideoConditionalPipeline.from_config(interactive_config("model_kwargs.use_infinite_attention=true"))
        endless = Session(infinite, A)
        endless.step()
        endless.close()
        assert len(warnings()) == 1
