"""Videos as streams: frames leave as they are made, writes are atomic, memory stays flat however long.

The long rollouts swap the tiny VAE's decoder for `NearestDecoder` (the real one costs ~50 ms a block
on a busy CPU; what is measured here is the job and the session around it, not the decoder).
"""

from __future__ import annotations

import gc
import os
import threading
import time
import warnings
from pathlib import Path

import imageio.v3 as iio
import pytest
import torch
from conftest import REPO

import longlive.jobs as jobs
import longlive.video_io as video_io
from longlive.config import load_config
from longlive.pipeline import VideoConditionalPipeline
from longlive.session import Session

T2V_CONFIG = REPO / "configs" / "tiny_t2v.yaml"
INTERACTIVE_CONFIG = REPO / "configs" / "tiny_interactive.yaml"

pytestmark = pytest.mark.usefixtures("one_thread")


class Killed(BaseException):
    """Stands for the process being killed (not an Exception, so nothing on the way catches it)."""


@pytest.fixture(autouse=True)
def _rank0(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)


class NearestDecoder:
    """The streaming decoder's contract at no cost: latent frame 0 -> 1 video frame, each later one ->
    `stride` frames, pixels repeated from the first 3 latent channels."""

    def __init__(self, stride: int, scale: int) -> None:
        self.stride, self.scale, self._started = stride, scale, False

    def reset_decoder(self) -> None:
        self._started = False

    def decode(self, latents: torch.Tensor) -> torch.Tensor:  # [B, F, C, h, w] -> [B, 3, N, H, W]
        frames = latents[:, :, :3].transpose(1, 2).tanh()  # [B, 3, F, h, w]
        frames = frames.repeat_interleave(self.stride, dim=2)
        if not self._started:
            frames, self._started = frames[:, :, self.stride - 1 :], True
        return frames.repeat_interleave(self.scale, dim=3).repeat_interleave(self.scale, dim=4)


def fast_pipeline(config: Path, *overrides: str) -> VideoConditionalPipeline:
    """The tiny model at 16x16 with one denoising step and `NearestDecoder`."""
    cfg = load_config(config, ["height=16", "width=16", "denoising_step_list=[1000]", *overrides])
    pipe = VideoConditionalPipeline.from_config(cfg)
    g = pipe.geometry
    pipe.vae = NearestDecoder(g.vae_temporal_stride, cfg.height // g.latent_height)
    return pipe


def t2v_job(tmp_path: Path, *overrides: str) -> tuple[VideoConditionalPipeline, Path]:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red square\n", encoding="utf-8")
    out = tmp_path / "out"
    return fast_pipeline(T2V_CONFIG, f"output_folder={out}", f"data_path={prompts}", *overrides), out


def rss_bytes() -> int:
    """Resident set size of this process now (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def tensor_bytes() -> int:
    """Bytes of every live tensor's storage (each storage once)."""
    gc.collect()
    storages = {}
    with warnings.catch_warnings():  # isinstance wakes deprecated lazy attributes of torch modules
        warnings.simplefilter("ignore")
        tensors = [obj for obj in gc.get_objects() if isinstance(obj, torch.Tensor)]
    for tensor in tensors:
        if type(tensor) not in (torch.Tensor, torch.nn.Parameter) or tensor.device.type != "cpu":
            continue  # fake tensors other tests' compilations left behind hold no memory
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def queue_bytes(pipe: VideoConditionalPipeline) -> int:
    """The most the encoder's queue holds: `QUEUE_BLOCKS` blocks of uint8 frames, plus 16 KiB of slack."""
    frames = pipe.geometry.vae_temporal_stride * pipe.cfg.num_frame_per_block
    return video_io.QUEUE_BLOCKS * frames * pipe.cfg.height * pipe.cfg.width * 3 + 16 * 2**10


def mp4_frames(path: Path) -> int:
    return iio.imread(path, plugin="FFMPEG").shape[0]


def encoder_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("longlive-encoder")]


class WriterLog:
    """Wraps `open_video_writer`: counts the frames each writer hands to ffmpeg; can fail on frame `fail_at`."""

    def __init__(self, monkeypatch, fail_at: int | None = None) -> None:
        self.frames, self.fail_at = 0, fail_at
        real = video_io.open_video_writer
        log = self

        class Writer:
            def __init__(self, *args, **kwargs) -> None:
                self.inner = real(*args, **kwargs)

            def append_data(self, frame) -> None:
                if log.frames == log.fail_at:
                    raise OSError("no space left on device")
                self.inner.append_data(frame)
                log.frames += 1

            def close(self) -> None:
                self.inner.close()

        monkeypatch.setattr(video_io, "open_video_writer", Writer)

    def wait_for(self, frames: int, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while self.frames < frames and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.frames >= frames


def test_job_streams_frames(tmp_path, monkeypatch):
    """Block 0's frames reach ffmpeg before the later blocks are made; a sample killed half way leaves
    no file under its final name (nor its temporary one) and no encoder thread."""
    pipe, out = t2v_job(tmp_path, "num_output_frames=12")
    writer = WriterLog(monkeypatch)
    real_stream = pipe.stream
    seen = []

    def stream(*args, **kwargs):
        for result in real_stream(*args, **kwargs):
            yield result
            if not seen:  # the rollout goes on only once the first block is in the encoder
                seen.append(writer.wait_for(result.frames.shape[2]))

    monkeypatch.setattr(pipe, "stream", stream)
    report = jobs.run_text_to_video_job(pipe.cfg, pipe)
    assert seen == [True], "block 0 was not written while the rollout went on"
    assert mp4_frames(Path(report.written[0])) == writer.frames == 4 * 12 - 3

    def killed_stream(*args, **kwargs):
        for result in real_stream(*args, **kwargs):
            if result.block.index == 2:
                raise Killed
            yield result

    monkeypatch.setattr(pipe, "stream", killed_stream)
    cfg = load_config(T2V_CONFIG, [*_overrides(pipe.cfg), "overwrite=true", f"output_folder={tmp_path / 'killed'}"])
    with pytest.raises(Killed):
        jobs.run_text_to_video_job(cfg, pipe)
    assert not (tmp_path / "killed").exists() or list((tmp_path / "killed").iterdir()) == []
    assert encoder_threads() == []


def _overrides(cfg) -> list[str]:
    keys = ("height", "width", "denoising_step_list", "num_output_frames", "data_path")
    return [f"{key}={list(cfg[key]) if key == 'denoising_step_list' else cfg[key]}" for key in keys]


def test_interrupted_writes_leave_no_final_name(tmp_path, monkeypatch):
    """The mp4, its latents and results.jsonl are written under temporary names: interrupting each write
    leaves the final name absent (or, for results.jsonl, as the last complete run left it)."""
    pipe, out = t2v_job(tmp_path, "num_output_frames=9", "save_latents=true")
    writer = WriterLog(monkeypatch, fail_at=5)
    with pytest.raises(OSError, match="no space left on device"):
        jobs.run_text_to_video_job(pipe.cfg, pipe)
    assert list(out.iterdir()) == [] and encoder_threads() == []

    writer.fail_at, fail_latents = None, []
    real_save = torch.save

    def interrupted_save(obj, path, *args, **kwargs):
        real_save(obj, path, *args, **kwargs)
        fail_latents.append(path)
        raise Killed

    monkeypatch.setattr(video_io.torch, "save", interrupted_save)
    with pytest.raises(Killed):
        jobs.run_text_to_video_job(pipe.cfg, pipe)
    assert fail_latents and list(out.iterdir()) == []  # neither the .pt nor the mp4 (which comes after it)
    monkeypatch.setattr(video_io.torch, "save", real_save)

    report = jobs.run_text_to_video_job(pipe.cfg, pipe)
    results = report.results_path.read_bytes()
    real_dumps = jobs.json.dumps

    def interrupted_dumps(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(jobs.json, "dumps", interrupted_dumps)
    with pytest.raises(Killed):
        jobs.run_text_to_video_job(load_config(T2V_CONFIG, [*_overrides(pipe.cfg), f"output_folder={out}"]), pipe)
    monkeypatch.setattr(jobs.json, "dumps", real_dumps)
    assert report.results_path.read_bytes() == results  # the last complete results, not a truncated file
    assert sorted(p.name for p in out.iterdir()) == ["rank0-0-0_regular.mp4", "rank0-0-0_regular.pt", "results.jsonl"]


def test_long_rollout_constant_memory(tmp_path, monkeypatch):
    """2401 latent frames (past LongLive's 1024-frame RoPE table) through the t2v job: host memory and live
    tensor bytes after the first tenth of the blocks equal those at the end, and the mp4 has every frame."""
    latent_frames = 2401
    pipe, out = t2v_job(
        tmp_path, f"num_output_frames={latent_frames}", "num_frame_per_block=12", "model_kwargs.local_attn_size=14"
    )
    blocks = -(-latent_frames // pipe.cfg.num_frame_per_block)
    marks: dict[int, tuple[int, int]] = {}
    real_put = video_io.FrameEncoder.put

    def put(self, frames):
        real_put(self, frames)
        put.count += 1
        count = put.count
        if count in (blocks // 10, blocks - 1):
            tensors = tensor_bytes()  # first: its scan of every object may grow the heap, at the first mark too
            marks[count] = (rss_bytes(), tensors)

    put.count = 0
    monkeypatch.setattr(video_io.FrameEncoder, "put", put)
    tensor_bytes()  # its own allocations, once before the first mark
    report = jobs.run_text_to_video_job(pipe.cfg, pipe)
    assert put.count == blocks
    (rss_tenth, tensors_tenth), (rss_end, tensors_end) = marks[blocks // 10], marks[blocks - 1]
    # The old job kept every frame as float32: 9601 x 16 x 16 x 3 x 4 B = 29.5 MB by the end, 26.5 MB of it
    # after the first tenth. Host RSS also moves with the allocator's heap: 6.9 MB once in a full clean-clone
    # run (2026-11-30, fifth session), under 2 MiB in two other full runs and alone; the live tensors are
    # checked exactly below. So the bound is 8 MiB, under a third of that leak.
    assert abs(rss_end - rss_tenth) < 8 * 2**20, (rss_tenth, rss_end)
    assert abs(tensors_end - tensors_tenth) < queue_bytes(pipe), (tensors_tenth, tensors_end)
    assert mp4_frames(Path(report.written[0])) == 4 * latent_frames - 3


def test_session_memory_bounded(tmp_path):
    """A session of 150 blocks: memory flat from the first tenth on; `save` (and `video_bytes`) give every
    frame so far, mid-session and after the end; no segment or encoder is left behind."""
    pipe = fast_pipeline(INTERACTIVE_CONFIG)
    output = tmp_path / "live.mp4"
    session = Session(pipe, "a red square", seed=0, output=output, max_frames=None)
    marks = {}
    tensor_bytes()  # its own allocations, once before the first mark
    for block in range(150):
        session.step()
        if block == 15:
            marks["tenth"] = (rss_bytes(), tensor_bytes())
        if block == 40:
            session.set_prompt("it turns blue")
            assert mp4_frames(session.save(tmp_path / "so_far.mp4")) == session.status().frames
    marks["end"] = (rss_bytes(), tensor_bytes())
    assert abs(marks["end"][0] - marks["tenth"][0]) < 2 * 2**20, marks
    assert abs(marks["end"][1] - marks["tenth"][1]) < queue_bytes(pipe), marks
    frames = session.status().frames
    assert frames == 4 * 150 * pipe.cfg.num_frame_per_block - 3
    (tmp_path / "bytes.mp4").write_bytes(session.video_bytes())
    assert mp4_frames(tmp_path / "bytes.mp4") == frames
    session.quit()
    session.run()
    assert mp4_frames(output) == frames and mp4_frames(session.save(tmp_path / "after.mp4")) == frames
    assert sorted(p.name for p in tmp_path.iterdir()) == ["after.mp4", "bytes.mp4", "live.mp4", "so_far.mp4"]
    assert encoder_threads() == []


def test_saved_segments_keep_every_frame_in_order(tmp_path):
    """Saves cut the record into segments of any length (one frame too); each save joins them into one
    mp4 with every frame so far, once and in order (frame k is gray level 8k)."""
    record = video_io.SegmentedVideo(tmp_path / "segments", fps=16)
    total = 0
    for i, count in enumerate([9, 1, 12, 1, 5]):
        levels = torch.arange(total, total + count, dtype=torch.float32) * 8 / 127.5 - 1  # [-1, 1]
        record.append(levels[None, :, None, None].expand(3, count, 16, 16))
        total += count
        path, frames = record.save(tmp_path / f"save{i}.mp4")
        means = iio.imread(path, plugin="FFMPEG").reshape(frames, -1).mean(axis=1)
        assert frames == total == len(means)
        assert (abs(means - 8 * torch.arange(total).numpy()) < 3).all(), means.round()
    record.remove()
    assert not (tmp_path / "segments").exists() and encoder_threads() == []


def test_session_without_end_needs_a_local_window():
    """Global attention caches every frame: a session must then stay within num_output_frames."""
    from longlive.pipeline import InputError

    pipe = fast_pipeline(INTERACTIVE_CONFIG, "model_kwargs.local_attn_size=-1")
    with pytest.raises(InputError, match="local_attn_size=-1"):
        Session(pipe, "a red square")
    with pytest.raises(InputError, match="max_frames <= num_output_frames=15"):
        Session(pipe, "a red square", max_frames=16)
    with pytest.raises(InputError, match="max_frames=0"):
        Session(pipe, "a red square", max_frames=0)
    Session(pipe, "a red square", max_frames=15).close()


def test_streamed_mp4_equals_the_whole_video_written_at_once(tmp_path):
    """The streaming writer (uint8 on the device, block by block through the encoder thread) gives the
    same decoded frames as the reference path: the whole rollout gathered, then `write_video`."""
    pipe, out = t2v_job(tmp_path, "num_output_frames=9")
    report = jobs.run_text_to_video_job(pipe.cfg, pipe)
    reference = video_io.write_video(tmp_path / "reference.mp4", pipe("a red square", seed=0).frames[0], pipe.cfg.fps)
    streamed = iio.imread(report.written[0], plugin="FFMPEG")
    assert streamed.shape[0] == 4 * 9 - 3
    assert (streamed == iio.imread(reference, plugin="FFMPEG")).all()


def test_to_host_returns_each_block_once_landed():
    """`to_host` (the job's latents, the encoder's frames): off CUDA a plain copy and no event; `landed`
    gives each copy back, equal to its source."""
    blocks = [torch.randn(3, 4, 5).transpose(0, 2), torch.randn(2, 4)]  # one of them not contiguous
    copies = [video_io.to_host(block) for block in blocks]
    assert [done for _, done in copies] == [None, None]
    assert all(torch.equal(host, block) for host, block in zip(map(video_io.landed, copies), blocks, strict=True))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned copies need a CUDA GPU")
def test_to_host_from_the_gpu_lands_in_pinned_memory():
    block = torch.randn(3, 16, 60, 104, device="cuda").transpose(2, 3)
    host, done = video_io.to_host(block)
    assert host.is_pinned() and isinstance(done, torch.cuda.Event)
    assert torch.equal(video_io.landed((host, done)), block.cpu())
