"""Batch jobs at scale: sharding over ranks, torchrun against one process, resume, overwrite,
results.jsonl, low-VRAM mode and image-to-video. CPU, tiny random model, `num_output_frames=6`."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from conftest import REPO, TINY_CONFIG, tiny_config, torchrun
from PIL import Image

import longlive.cli as cli
import longlive.jobs as jobs
import longlive.pipeline as pipeline_module
from longlive import distributed
from longlive.components import build_streaming_vae
from longlive.distributed import World
from longlive.pipeline import VideoConditionalPipeline, resolve_low_vram
from longlive.video_io import load_image

T = 6
HEIGHT, WIDTH = 32, 48
EXAMPLE = REPO / "example"
VIDEOS = [EXAMPLE / "videos" / "red_square_right.mp4", EXAMPLE / "videos" / "blue_circle_down.mp4"]
I2V_CONFIG = REPO / "configs" / "tiny_i2v.yaml"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _one_process(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def three_samples(tmp_path) -> Path:
    """Three samples: on two ranks, rank 0 gets samples 0 and 2, rank 1 sample 1 (an uneven tail)."""
    lines = [
        {"video_path": str(VIDEOS[0]), "prompt1": "a red square", "prompt2": "it turns blue"},
        {"video_path": str(VIDEOS[1]), "prompt1": "a blue circle", "prompt2": "it bounces"},
        {"video_path": str(VIDEOS[0]), "prompt1": "a red square", "prompt2": "it stops"},
    ]
    path = tmp_path / "three.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def run(command: str, config: Path, *overrides: str) -> int:
    return cli.main([command, "--config_path", str(config), f"num_output_frames={T}", *overrides])


def results(out: Path) -> list[dict]:
    return jobs.read_results(out / "results.jsonl")


def mp4s(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("*.mp4"))


def read_mp4(path: Path) -> np.ndarray:
    return iio.imread(path, plugin="FFMPEG")


# -- sharding and the world ------------------------------------------------------------------------


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 5])
def test_shard_gives_every_sample_to_exactly_one_rank(world_size):
    for size in range(12):
        shards = [distributed.shard(size, World(rank, world_size)) for rank in range(world_size)]
        flat = [idx for shard in shards for idx in shard]
        assert sorted(flat) == list(range(size)), (world_size, size, shards)  # no duplicate, none dropped
        assert max(map(len, shards)) - min(map(len, shards)) <= 1  # no padding: balanced within one
        for rank, shard in enumerate(shards):
            assert all(idx % world_size == rank for idx in shard)  # sample i -> rank i % world_size
            assert shard == sorted(shard)


def test_shard_keeps_the_tail():
    """LongLive's DistributedSampler(drop_last=True) gives 8 videos for 10 prompts on 4 GPUs; all 10 here."""
    shards = [distributed.shard(10, World(rank, 4)) for rank in range(4)]
    assert shards == [[0, 4, 8], [1, 5, 9], [2, 6], [3, 7]]
    assert distributed.shard(["a", "b", "c"], World(1, 2)) == ["b"]  # sequences too


def test_detect_reads_torchrun_environment():
    assert distributed.detect({}) == World()
    assert distributed.detect({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == World(3, 4, 1)
    with pytest.raises(RuntimeError, match="inconsistent"):
        distributed.detect({"RANK": "4", "WORLD_SIZE": "4", "LOCAL_RANK": "0"})
    world = World(3, 4, 1)
    assert distributed.device_for(world, "cuda") == torch.device("cuda", 1)  # one GPU per rank
    assert distributed.device_for(world, "cuda:0") == torch.device("cuda", 0)  # explicit wins
    assert distributed.device_for(World(), "cuda") == torch.device("cuda", 0)
    assert distributed.device_for(world, "cpu") == torch.device("cpu")


def test_one_process_needs_no_process_group(monkeypatch):
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda *a, **k: pytest.fail("init called"))
    with distributed.launch("cpu") as world:
        assert world == World() and distributed.current() is world
        assert distributed.gather({"a": 1}, world) == [{"a": 1}]
        distributed.barrier(world)
    assert distributed.current() == World()


def test_log_prefix_carries_the_rank(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    seen = {}
    monkeypatch.setattr(logging, "basicConfig", lambda **kwargs: seen.update(kwargs))
    cli.setup_logging()
    assert seen["format"].startswith("[rank1] ")


# -- torchrun (gloo) against one process -----------------------------------------------------------


def test_torchrun_two_ranks_write_what_one_process_writes(tmp_path, three_samples):
    one, two = tmp_path / "one", tmp_path / "two"
    overrides = [f"data_path={three_samples}", "save_latents=true"]
    assert run("video-conditional", TINY_CONFIG, f"output_folder={one}", *overrides) == 0

    proc = torchrun(
        2,
        "video_conditional_inference.py",
        "--config_path",
        str(TINY_CONFIG),
        f"num_output_frames={T}",
        f"output_folder={two}",
        *overrides,
    )
    assert "[rank0]" in proc.stderr and "[rank1]" in proc.stderr  # logs prefixed by rank

    # samples 0 and 2 on rank 0, sample 1 on rank 1: each exactly once, the uneven tail kept
    assert mp4s(one) == ["rank0-0-0_regular.mp4", "rank0-1-1_regular.mp4", "rank0-2-2_regular.mp4"]
    assert mp4s(two) == ["rank0-0-0_regular.mp4", "rank0-2-2_regular.mp4", "rank1-1-1_regular.mp4"]
    for idx, rank in ((0, 0), (1, 1), (2, 0)):
        a, b = one / f"rank0-{idx}-{idx}_regular", two / f"rank{rank}-{idx}-{idx}_regular"
        assert torch.equal(torch.load(a.with_suffix(".pt")), torch.load(b.with_suffix(".pt"))), idx  # bit-identical
        assert np.array_equal(read_mp4(a.with_suffix(".mp4")), read_mp4(b.with_suffix(".mp4"))), idx

    # rank 0 gathered every rank's records into one results.jsonl, by index
    merged = results(two)
    assert [(r["index"], r["rank"], r["status"]) for r in merged] == [(0, 0, "ok"), (1, 1, "ok"), (2, 0, "ok")]
    assert [r["inputs"] for r in merged] == [r["inputs"] for r in results(one)]
    assert sorted(p.name for p in two.iterdir() if not p.name.startswith("rank")) == ["results.jsonl"]


# -- resume and overwrite --------------------------------------------------------------------------


def _spy(real, calls: list[int]):
    """`write_sample` recording the seed of every rollout (with seed=0 and num_samples=1, the sample index)."""

    def spy(cfg, pipeline, request, path, seed, *args, **kwargs):
        calls.append(seed)
        return real(cfg, pipeline, request, path, seed, *args, **kwargs)

    return spy


class Killed(BaseException):
    """Stands for the job being killed (not an Exception, so nothing on the way catches it)."""


def test_killed_job_resumes_with_nothing_lost_or_done_twice(tmp_path, three_samples, monkeypatch):
    out = tmp_path / "out"
    args = ("video-conditional", TINY_CONFIG, f"output_folder={out}", f"data_path={three_samples}")
    real = jobs.write_sample

    def dies_on_second_sample(cfg, pipeline, request, path, seed, *args, **kwargs):
        if seed == 1:
            raise Killed
        return real(cfg, pipeline, request, path, seed, *args, **kwargs)

    monkeypatch.setattr(jobs, "write_sample", dies_on_second_sample)
    with pytest.raises(Killed):
        run(*args)
    assert mp4s(out) == ["rank0-0-0_regular.mp4"]
    assert not (out / "results.jsonl").exists()
    # a SIGKILL while writing would also leave a temporary file; it must not count as finished
    (out / ".rank0-1-1_regular.partial.mp4").write_bytes(b"half a video")
    finished = (out / "rank0-0-0_regular.mp4").stat().st_mtime_ns

    generated: list[int] = []
    monkeypatch.setattr(jobs, "write_sample", _spy(real, generated))
    assert run(*args) == 0

    assert generated == [1, 2]  # sample 0 not generated again
    assert (out / "rank0-0-0_regular.mp4").stat().st_mtime_ns == finished
    assert mp4s(out) == ["rank0-0-0_regular.mp4", "rank0-1-1_regular.mp4", "rank0-2-2_regular.mp4"]
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # the partial file was replaced
    records = results(out)
    assert [r["status"] for r in records] == ["skipped", "ok", "ok"]
    assert records[0]["outputs"] == [str(out / "rank0-0-0_regular.mp4")]

    generated.clear()
    assert run(*args) == 0  # a third run has nothing left to do
    assert generated == [] and [r["status"] for r in results(out)] == ["skipped"] * 3


def test_resume_finds_other_ranks_outputs_and_overwrite_replaces_them(tmp_path, three_samples, monkeypatch):
    """A job first run on 2 ranks, rerun on 1: rank 1's output counts as done; overwrite replaces it."""
    out = tmp_path / "out"
    out.mkdir()
    calls: list[int] = []
    monkeypatch.setattr(jobs, "write_sample", _spy(jobs.write_sample, calls))
    args = ("video-conditional", TINY_CONFIG, f"output_folder={out}", f"data_path={three_samples}", "inference_iter=2")
    earlier = out / "rank1-1-1_regular.mp4"
    shutil.copy(VIDEOS[1], earlier)  # what rank 1 wrote for sample 1 in a 2-rank run
    shutil.copy(VIDEOS[1], out / "rank1-1-1_lora.mp4")  # another model's output does not count
    shutil.copy(VIDEOS[1], out / "rank0-11-1_regular.mp4")  # nor another sample's

    assert run(*args) == 0
    assert calls == [0]
    assert [(r["status"], r["outputs"]) for r in results(out)] == [
        ("ok", [str(out / "rank0-0-0_regular.mp4")]),
        ("skipped", [str(earlier)]),
    ]

    calls.clear()
    finished = (out / "rank0-0-0_regular.mp4").stat().st_mtime_ns
    assert run(*args, "overwrite=true") == 0
    assert calls == [0, 1]  # everything again
    assert (out / "rank0-0-0_regular.mp4").stat().st_mtime_ns != finished
    assert not earlier.exists()  # replaced by this run's rank-0 output, not left beside it
    assert mp4s(out) == [
        "rank0-0-0_regular.mp4",
        "rank0-1-1_regular.mp4",
        "rank0-11-1_regular.mp4",
        "rank1-1-1_lora.mp4",
    ]
    assert [r["status"] for r in results(out)] == ["ok", "ok"]


def test_resume_per_seed(tmp_path, three_samples, monkeypatch):
    """num_samples=2: a sample with one of its two videos done generates only the other."""
    out = tmp_path / "out"
    calls: list[int] = []
    monkeypatch.setattr(jobs, "write_sample", _spy(jobs.write_sample, calls))
    args = ("video-conditional", TINY_CONFIG, f"output_folder={out}", f"data_path={three_samples}")
    assert run(*args, "num_samples=2", "inference_iter=1") == 0
    assert calls == [0, 1]
    (out / "rank0-0-1_regular.mp4").unlink()
    calls.clear()
    assert run(*args, "num_samples=2", "inference_iter=1") == 0
    assert calls == [1]
    (record,) = results(out)
    assert record["status"] == "ok" and record["seeds"] == [0, 1]
    assert record["outputs"] == [str(out / "rank0-0-0_regular.mp4"), str(out / "rank0-0-1_regular.mp4")]


def test_find_outputs_matches_any_rank_only(tmp_path):
    cfg = tiny_config(f"output_folder={tmp_path}")
    for name in ("rank0-1-1_regular.mp4", "rank12-10-10_regular.mp4", ".rank0-2-2_regular.partial.mp4"):
        (tmp_path / name).write_bytes(b"")
    for name in ("rank0-3-3_ema.mp4", "rank0-4-4_regular.mp4.tmp", "x-5-5_regular.mp4", "results.jsonl"):
        (tmp_path / name).write_bytes(b"")
    found = jobs.find_outputs(cfg)
    assert found == {(1, 1): tmp_path / "rank0-1-1_regular.mp4", (10, 10): tmp_path / "rank12-10-10_regular.mp4"}


# -- low-VRAM mode ---------------------------------------------------------------------------------


def _free(gib: float):
    def probe(device):
        assert torch.device(device).type == "cuda"
        return int(gib * 1024**3)

    return probe


def test_low_vram_resolution(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="longlive.pipeline")
    monkeypatch.setattr(pipeline_module, "free_gpu_memory", _free(20))
    assert resolve_low_vram(None, "cuda:0") is True  # automatic: 20 GiB free < 40
    assert "low-VRAM mode: on" in caplog.text and "20.0 GiB free" in caplog.text
    assert resolve_low_vram(False, "cuda:0") is False  # forced off
    monkeypatch.setattr(pipeline_module, "free_gpu_memory", _free(70))
    assert resolve_low_vram(None, torch.device("cuda", 1)) is False  # automatic: 70 GiB free
    assert resolve_low_vram(True, "cuda:0") is True  # forced on

    monkeypatch.setattr(pipeline_module, "free_gpu_memory", lambda device: pytest.fail("probed a CPU"))
    assert resolve_low_vram(None, "cpu") is False
    assert resolve_low_vram(True, "cpu") is True


@pytest.mark.parametrize(("low_vram", "encoder_device"), [(True, "cpu"), (False, "meta"), (None, "meta")])
def test_low_vram_keeps_the_text_encoder_on_the_cpu(monkeypatch, tiny_model, low_vram, encoder_device):
    """Built for a device (meta stands in for a GPU): in low-VRAM mode the text encoder stays on the CPU."""
    built = {}
    monkeypatch.setattr(pipeline_module, "build_generator", lambda cfg, device: tiny_model)
    monkeypatch.setattr(pipeline_module, "build_streaming_vae", lambda cfg, device: None)
    monkeypatch.setattr(pipeline_module, "build_prompt_encoder", lambda cfg, device: built.setdefault("at", device))
    cfg = tiny_config(f"low_vram={'null' if low_vram is None else str(low_vram).lower()}")
    pipe = VideoConditionalPipeline.from_config(cfg, device="meta")
    assert pipe.device == torch.device("meta")
    assert built["at"] == torch.device(encoder_device)


# -- image-to-video --------------------------------------------------------------------------------


def test_i2v_job(tmp_path):
    out = tmp_path / "out"
    bad_image = tmp_path / "bad.png"
    bad_image.write_bytes(b"not a png")
    data = tmp_path / "i2v.jsonl"
    lines = (EXAMPLE / "i2v_example.jsonl").read_text(encoding="utf-8").splitlines()
    lines += [json.dumps({"image_path": str(bad_image), "prompt": "x"}), json.dumps({"image_path": "none.png"})]
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")

    # num_conditioning_frames=9 on the command line: the i2v command still conditions on 1 frame
    overrides = (f"output_folder={out}", f"data_path={data}", "save_latents=true", "num_conditioning_frames=9")
    assert run("i2v", I2V_CONFIG, *overrides) == 1  # two bad lines

    assert mp4s(out) == ["rank0-0-0_regular.mp4", "rank0-1-1_regular.mp4"]
    for name in mp4s(out):
        assert read_mp4(out / name).shape == (4 * T - 3, HEIGHT, WIDTH, 3)
    records = results(out)
    assert [r["status"] for r in records] == ["ok", "ok", "failed", "failed"]
    assert records[0]["inputs"]["image_path"] == "example/images/red_square_right.png"
    assert "cannot read image" in records[2]["error"] and "bad.png" in records[2]["error"]
    assert "'prompt' is missing" in records[3]["error"] and records[3]["inputs"] == {"line": lines[3]}

    # the image is the first latent frame: the VAE's encoding of it, as the config resizes it
    cfg = tiny_config("num_conditioning_frames=1", f"num_output_frames={T}")
    image = load_image(EXAMPLE / "images" / "red_square_right.png", HEIGHT, WIDTH)  # [3, 1, H, W]
    latents = torch.load(out / "rank0-0-0_regular.pt")  # [T, C, h, w]
    assert latents.shape == (T, 16, HEIGHT // 8, WIDTH // 8)
    encoded = build_streaming_vae(cfg, torch.device("cpu")).encode(image[None])  # [1, 1, C, h, w]
    torch.testing.assert_close(latents[:1], encoded[0], atol=1e-5, rtol=0)


def test_load_image_modes(tmp_path):
    """Grey, RGBA and palette images all become RGB frames at the model resolution."""
    rgb = np.zeros((20, 30, 3), dtype=np.uint8)
    rgb[:, :, 0] = 255
    for mode in ("L", "RGBA", "P"):
        path = tmp_path / f"{mode}.png"
        Image.fromarray(rgb).convert(mode).save(path)
        image = load_image(path, HEIGHT, WIDTH)
        assert image.shape == (3, 1, HEIGHT, WIDTH) and image.dtype == torch.float32
    with pytest.raises(ValueError, match="image not found"):
        load_image(tmp_path / "none.png", HEIGHT, WIDTH)
