"""One stream over two ranks (Ulysses sequence parallelism, decode on the other rank) against one process.

torchrun (gloo, CPU) runs `parallel_worker.py` once for the module: the tiny model at 48x48 (9 tokens a
frame, so the two ranks' shares are 5 and 4+1 padding), a rolling window (sink 1 + 5 frames over 15
frames) and two prompt switches with LongLive's recache, under absolute and window-relative RoPE.
"""

from __future__ import annotations

import gc
import json
import os
import weakref
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from conftest import torchrun
from parallel_worker import CONFIG, PROMPTS, rollout, session

import longlive.cli as cli
from longlive import distributed, parallel
from longlive.config import ConfigError, load_config
from longlive.distributed import World

pytestmark = pytest.mark.usefixtures("one_thread")
OVERRIDES = ["height=48", "width=48"]  # 3x3 tokens a frame: an odd count, split unevenly over two ranks
WORKER = str(Path(__file__).with_name("parallel_worker.py"))


@contextmanager
def one_process():
    """Run the one-process reference here, with torchrun's variables (if pytest itself runs under it) hidden."""
    saved = {key: os.environ.pop(key) for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK") if key in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


# (overrides, the switches' recached frames): LongLive's recache (an early switch reruns [0, 6), a late one
# [4, 9) keeping sink frame 0) with absolute RoPE, and with window-relative RoPE (keys cached unrotated,
# the queries' rows per rank, the visible keys' tables on the head side after the exchange); the window
# recache (the window's frames in their blocks: a masked pass, one key table per block) with the latter.
INFINITE = "model_kwargs.use_infinite_attention=true"
MODES = {
    "absolute": ([], [(0, 6), (4, 9)]),
    "infinite": ([INFINITE, "recache_mode=longlive"], [(0, 6), (4, 9)]),
    "infinite-window": ([INFINITE, "recache_mode=window"], [(1, 6), (4, 9)]),
}


@pytest.fixture(scope="module", params=sorted(MODES))
def runs(request, tmp_path_factory) -> dict[str, dict]:
    """The one-process rollout and each rank's of the two-rank stream (rank 1 decodes), in one RoPE mode."""
    overrides, switches = MODES[request.param]
    overrides = [*OVERRIDES, *overrides]
    one, two = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("two")
    with one_process():
        rollout(one, overrides)
    one_rank = ("parallel.sequence=2", "parallel.vae_rank=1", "parallel.split_decode=false")  # decode on rank 1
    torchrun(2, WORKER, "rollout", str(two), *overrides, *one_rank)
    saved = {
        name: torch.load(path, weights_only=False)
        for name, path in (("one", one / "rank0.pt"), ("rank0", two / "rank0.pt"), ("rank1", two / "rank1.pt"))
    }
    return {**saved, "switches": switches, "window_rope": INFINITE in overrides}


def test_sequence_parallel_matches_single_process(runs):
    reference = runs["one"]
    assert reference["switches"] == runs["switches"]  # both switches recached
    for rank in ("rank0", "rank1"):
        run = runs[rank]
        assert run["switches"] == reference["switches"]
        assert run["cache_heads"] == reference["cache_heads"] // 2  # each rank caches its half of the heads
        assert run["window_rope"] == reference["window_rope"] == runs["window_rope"]  # the mode under test
        # float32: equal up to the order of the reductions over the ranks' row counts
        torch.testing.assert_close(run["latents"], reference["latents"], rtol=1e-5, atol=1e-5)
    assert torch.equal(runs["rank0"]["latents"], runs["rank1"]["latents"])  # one stream: the same on every rank
    assert reference["latents"].std() > 0.1  # a real signal, not zeros compared with zeros


def test_decode_on_other_rank_matches(runs):
    assert runs["rank0"]["frames"] is None  # rank 0 left the decode to rank 1 (parallel.vae_rank=1)
    frames, reference = runs["rank1"]["frames"], runs["one"]["frames"]
    assert frames.shape == reference.shape == (1, 3, 57, 48, 48)
    torch.testing.assert_close(frames, reference, rtol=1e-4, atol=1e-4)


def test_split_decode_matches(tmp_path):
    """`parallel.split_decode`: each rank decodes its rows of every block (3 latent rows of 6 each, with the
    halo), rank 1 gathers them: the frames of the one-process decode, and only rank 1 has them."""
    one, two = tmp_path / "one", tmp_path / "two"
    with one_process():
        rollout(one, OVERRIDES)
    split = ["parallel.sequence=2", "parallel.vae_rank=1", "parallel.split_decode=true"]
    torchrun(2, WORKER, "rollout", str(two), *OVERRIDES, *split)
    reference = torch.load(one / "rank0.pt", weights_only=False)
    ranks = [torch.load(two / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert ranks[0]["frames"] is None
    assert ranks[1]["frames"].shape == reference["frames"].shape == (1, 3, 57, 48, 48)
    # the latents agree to float32 tolerance (the generator's sums over other row counts), so do the frames
    torch.testing.assert_close(ranks[1]["frames"], reference["frames"], rtol=1e-4, atol=1e-4)
    assert reference["frames"].std() > 0.05


@pytest.mark.parametrize("split", [False, True], ids=["decode-on-one-rank", "split-decode"])
def test_interactive_job_over_one_stream_of_two_ranks(tmp_path, split):
    """The job path: the group shares one sample, the decoding rank writes its mp4 and the one record (with
    the decode split over both ranks and overlapped, too)."""
    out = tmp_path / "out"
    extra = ["parallel.split_decode=true", "parallel.overlap_decode=true"] if split else ["parallel.split_decode=false"]
    torchrun(
        2,
        "interactive_inference.py",
        "--config_path",
        str(CONFIG),
        f"output_folder={out}",
        "num_output_frames=9",
        "switch_frame_indices=[3,6]",
        "parallel.sequence=2",
        "parallel.vae_rank=1",
        "inference_iter=1",
        *extra,
    )
    assert sorted(p.name for p in out.glob("*.mp4")) == ["rank1-0-0_regular.mp4"]
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["index"], r["rank"], r["status"]) for r in records] == [(0, 1, "ok")]


def test_parallel_keys_are_validated():
    with pytest.raises(ConfigError, match=r"^parallel.sequence=3 must divide the model's 2 heads"):
        load_config(CONFIG, ["parallel.sequence=3"])
    with pytest.raises(ConfigError, match=r"^parallel.vae_rank=2 must lie in \[0, parallel.sequence=2\)"):
        load_config(CONFIG, ["parallel.sequence=2", "parallel.vae_rank=2"])
    with pytest.raises(ConfigError, match=r"^parallel.split_decode cannot split 2 latent rows \(height=16\) over"):
        split = ["parallel.sequence=3", "parallel.split_decode=true", "height=16"]  # 12 heads, 2 latent rows
        load_config(CONFIG, ["model_name=Wan2.1-T2V-1.3B", *split])
    with pytest.raises(ConfigError, match=r"^parallel.sequence=2 must divide the number of ranks \(3\)"):
        parallel.stream_group(World(rank=0, world_size=3), 2)


def test_one_rank_per_stream_is_todays_path():
    group = parallel.stream_group(World(rank=3, world_size=4), 1)
    assert (group.rank, group.size, group.index, group.count, group.process_group) == (0, 1, 3, 4, None)
    assert group.shard_world == World(rank=3, world_size=4)  # the job shards exactly as before


@pytest.mark.parametrize("split", [False, True], ids=["decode-on-one-rank", "split-decode"])
def test_session_over_two_ranks_matches_and_stops_together(tmp_path, capsys, split):
    """A live session: the decoding rank's prompts reach the other rank at each boundary, and a quit with
    blocks left ends both, as does the end of a session's `max_frames` (the job would hang otherwise, and
    torchrun's timeout fail the test); with the decode split over both ranks too."""
    one, two = tmp_path / "one", tmp_path / "two"
    with one_process():
        session(one, OVERRIDES)
        assert cli.main(["session", "--config_path", str(CONFIG), "--prompt", "a", "parallel.sequence=2"]) == 2
        assert "parallel.sequence=2 ranks, not 1" in capsys.readouterr().err
    extra = ["parallel.split_decode=" + str(split).lower()]
    torchrun(2, WORKER, "session", str(two), *OVERRIDES, "parallel.sequence=2", "parallel.vae_rank=1", *extra)
    reference, run = torch.load(one / "session.pt"), torch.load(two / "session.pt")
    torch.testing.assert_close(run["frames"], reference["frames"], rtol=1e-4, atol=1e-4)
    assert reference["switches"] == run["switches"] == [(0, 6)]  # the new prompt recached [0, 6) (LongLive)
    assert reference["latents"].shape[0] == 9  # three blocks of three, then quit
    assert reference["limited_ends"] == run["limited_ends"] == [3, 5]  # max_frames=5 ends both ranks there
    torch.testing.assert_close(run["latents"], reference["latents"], rtol=1e-5, atol=1e-5)


def test_bench_times_one_stream_over_two_ranks(capsys):
    """`longlive bench` under torchrun: both ranks run the stream, rank 0 prints one JSON line."""
    t2v = str(CONFIG.with_name("tiny_t2v.yaml"))
    proc = torchrun(
        2, "-m", "longlive.cli", "bench", "--config_path", t2v, "num_output_frames=6", "parallel.sequence=2"
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1 and lines[0]["workload"]["sequence_parallel"] == 2
    assert lines[0]["fps_end_to_end"] > 0 and lines[0]["video_frames"] == 21  # 6 latent frames -> 4*6-3
    # on one process the same config is refused with one line naming the key
    assert cli.main(["bench", "--config_path", t2v, "parallel.sequence=2"]) == 2
    assert "parallel.sequence=2 ranks, not 1" in capsys.readouterr().err


def test_decode_alongside_the_next_block_matches_decode_in_line():
    """`parallel.overlap_decode`: the same frames, every block once and in order, through `stream` (jobs,
    bench) and a job's prompt schedule with a recache; on CPU this holds the reordering to the reference."""
    from longlive.jobs import Request, sample_stream
    from longlive.pipeline import PromptSchedule, VideoConditionalPipeline

    runs = {}
    for overlap in (False, True):
        cfg = load_config(
            CONFIG, [f"parallel.overlap_decode={overlap}", "num_output_frames=9", "switch_frame_indices=4"]
        )
        pipe = VideoConditionalPipeline.from_config(cfg)
        blocks = [(r.block.index, r.frames) for r in pipe.stream(PROMPTS[0], seed=1)]
        schedule = PromptSchedule(PROMPTS[:2], (4,))
        job = list(sample_stream(pipe, Request(PROMPTS[0], schedule=schedule), None, seed=2))
        runs[overlap] = blocks, (torch.cat([r.latents for r in job], 1), torch.cat([r.frames for r in job], 2))
    (in_line, (latents, frames)), (alongside, (latents2, frames2)) = runs[False], runs[True]
    assert [index for index, _ in alongside] == [index for index, _ in in_line] == [0, 1, 2]
    for (_, a), (_, b) in zip(in_line, alongside, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(latents, latents2) and torch.equal(frames, frames2)


def test_one_process_commands_refuse_a_group(monkeypatch, capsys):
    """`longlive serve` and `longlive bench --job` run one stream in one process: parallel.sequence > 1 and
    torchrun are refused with one line before anything is built (not ignored, not one server per rank)."""
    t2v = str(CONFIG.with_name("tiny_t2v.yaml"))
    for command in (["serve"], ["bench", "--job", "t2v"]):
        name = " ".join(command[:1] + command[1:2])
        assert cli.main([*command, "--config_path", t2v, "parallel.sequence=2"]) == 2
        err = capsys.readouterr().err.strip()
        assert err == (
            f"longlive: error: longlive {name} runs in one process: parallel.sequence=2 is for the jobs, "
            "longlive bench and longlive session under torchrun; set parallel.sequence=1"
        )
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli.main(["serve", "--config_path", t2v]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("longlive serve runs in one process, not 2 ranks: run it without torchrun")


def test_a_job_drops_its_pipeline_before_the_group_ends(monkeypatch, tmp_path):
    """NCCL destroys a communicator only once every CUDA graph that captured it is gone (a sequence-parallel
    pipeline's, under cuda_graphs): the 2-GPU job hung at its exit while `run_job` still held its pipeline
    around `launch`'s destroy_process_group. Here `launch` checks, where it would destroy the group, that
    the job's pipeline is gone."""
    from longlive.pipeline import VideoConditionalPipeline

    built, alive_at_end = [], []
    from_config = VideoConditionalPipeline.from_config.__func__

    def recording_from_config(cls, *args, **kwargs):
        pipeline = from_config(cls, *args, **kwargs)
        built.append(weakref.ref(pipeline))
        return pipeline

    real_launch = distributed.launch

    @contextmanager
    def checking_launch(device):
        with real_launch(device) as world:
            yield world
            gc.collect()
            alive_at_end.append([ref() is not None for ref in built])

    monkeypatch.setattr(VideoConditionalPipeline, "from_config", classmethod(recording_from_config))
    monkeypatch.setattr(distributed, "launch", checking_launch)
    overrides = [f"output_folder={tmp_path}", "num_output_frames=9", "switch_frame_indices=[3,6]", "inference_iter=1"]
    assert cli.main(["interactive", "--config_path", str(CONFIG), *overrides]) == 0
    assert alive_at_end == [[False]]
