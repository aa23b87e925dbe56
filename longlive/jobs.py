"""Batch jobs over input files: video-conditional, image-to-video and interactive (JSONL), text-to-video.

The jobs share one loop, `run_samples`:

    1. shard the sample indices over the ranks (sample i -> rank i % world_size, `longlive.distributed`)
    2. for each sample of this rank: parse its line; skip the seeds whose video already exists in
       `output_folder` under any rank's name (resume) unless `overwrite`; load its video or image;
       stream the rollout block by block into the mp4's encoder as the blocks are made
    3. gather every rank's records; rank 0 writes `results.jsonl`, one line per sample by index

A sample that cannot be used (bad line, missing or short video, empty prompt) fails alone with a
one-line error in the log and in `results.jsonl`; every other sample still runs. A job killed half
way leaves only finished mp4s (they are written under a temporary name, then renamed), so rerunning
it generates exactly the samples that are missing.

Memory does not grow with the video's length: each block is converted to uint8 on the device and
queued to an encoder thread feeding ffmpeg (`video_io.FrameEncoder`), which writes it while the GPU
makes the next blocks. Only `save_latents` keeps something per block: the latents (float32 on the
host, height x width bytes per latent frame, 1/12 of the video's uint8 bytes), saved when the sample ends.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from longlive import distributed
from longlive.config import ConfigError, switch_frames
from longlive.datasets import (
    BlankLine,
    ImageToVideoDataset,
    InteractiveDataset,
    SampleError,
    TextDataset,
    VideoConditionalDataset,
    check_data_path,
)
from longlive.distributed import World
from longlive.pipeline import (
    BlockResult,
    InputError,
    PromptSchedule,
    VideoConditionalPipeline,
    decode_alongside,
    plan_blocks,
)
from longlive.startup import log_first_sample
from longlive.video_io import (
    FrameEncoder,
    VideoReadError,
    atomic_path,
    landed,
    load_image,
    load_video,
    require_video_writer,
    to_host,
    write_latents,
)

logger = logging.getLogger(__name__)

# A sample's own bad input: that sample fails alone (the command's bad input is `cli.USER_ERRORS`).
SAMPLE_ERRORS = (SampleError, VideoReadError, InputError)
RESULTS_FILE = "results.jsonl"


@dataclass(frozen=True)
class Request:
    """One sample as the pipeline takes it: prompts and an optional conditioning video [3, N, H, W].

    With `schedule` (interactive), its prompts replace prompt1/prompt2.
    """

    prompt1: str
    prompt2: str | None = None
    video: torch.Tensor | None = None
    schedule: PromptSchedule | None = None


@dataclass
class SampleRecord:
    """One line of `results.jsonl`."""

    index: int
    status: str  # ok | failed | skipped (every output already existed, or a blank line)
    inputs: dict[str, Any]  # the parsed line, or {"line": ...} when it cannot be parsed
    seeds: list[int]
    outputs: list[str] = field(default_factory=list)  # one mp4 per seed, in seed order
    latents: list[str] = field(default_factory=list)  # with save_latents
    error: str | None = None
    rank: int = 0
    # seconds (load, generate, write, total, first_block) and the steady rate (second_half_fps, frames/s)
    timings: dict[str, float] = field(default_factory=dict)
    # Interactive: each switch as asked (`requested`) and where it took effect (`frame`, a block boundary).
    switches: list[dict[str, int | None]] = field(default_factory=list)


@dataclass
class JobReport:
    """Every rank's records, by sample index (the same on every rank)."""

    records: list[SampleRecord]
    results_path: Path

    @property
    def written(self) -> list[str]:
        return [out for r in self.records if r.status == "ok" for out in r.outputs]

    @property
    def skipped(self) -> list[SampleRecord]:
        return [r for r in self.records if r.status == "skipped"]

    @property
    def failed(self) -> list[str]:
        return [f"sample {r.index}: {r.error}" for r in self.records if r.status == "failed"]


# -- names ---------------------------------------------------------------------------------------


def model_type(cfg: DictConfig) -> str:
    """lora / ema / regular, as LongLive names its outputs."""
    if cfg.lora_ckpt:
        return "lora"
    return "ema" if cfg.use_ema else "regular"


def output_path(cfg: DictConfig, idx: int, seed: int, rank: int | None = None) -> Path:
    rank = distributed.current().rank if rank is None else rank
    return Path(cfg.output_folder) / f"rank{rank}-{idx}-{seed}_{model_type(cfg)}.mp4"


def find_outputs(cfg: DictConfig) -> dict[tuple[int, int], Path]:
    """Finished videos in `output_folder` by (index, seed), whichever rank wrote them.

    One listing for the whole job; temporary files (`.rank0-...partial.mp4`) do not match.
    """
    folder = Path(cfg.output_folder)
    pattern = re.compile(rf"rank\d+-(\d+)-(-?\d+)_{re.escape(model_type(cfg))}\.mp4")
    found: dict[tuple[int, int], Path] = {}
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            match = pattern.fullmatch(path.name)
            if match and path.is_file():
                found.setdefault((int(match[1]), int(match[2])), path)
    return found


def sample_seeds(cfg: DictConfig, idx: int) -> list[int]:
    """Seeds follow the sample index (not the process), so outputs do not depend on how work is split."""
    return [cfg.seed + idx * cfg.num_samples + j for j in range(cfg.num_samples)]


def _limit(cfg: DictConfig, count: int) -> int:
    return count if cfg.inference_iter < 0 else min(count, cfg.inference_iter)


def _data_path(cfg: DictConfig, what: str) -> Path:
    return check_data_path(cfg.data_path, what)


def prepare_output_folder(cfg: DictConfig) -> Path:
    """Create `output_folder` before any work, so a path that cannot be one fails at once, in one line."""
    folder = Path(cfg.output_folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"output_folder {folder} exists and is not a folder") from None
    except OSError as err:
        raise ConfigError(f"output_folder {folder} cannot be created: {err.strerror or err}") from None
    return folder


# -- the jobs ------------------------------------------------------------------------------


def run_video_conditional_job(
    cfg: DictConfig, pipeline: VideoConditionalPipeline, world: World | None = None
) -> JobReport:
    """Condition on each JSONL line's video under prompt1, continue under prompt2, write mp4s."""
    dataset = VideoConditionalDataset(_data_path(cfg, "a JSONL of {video_path, prompt1, prompt2} lines"))

    def load(sample: dict[str, Any]) -> Request:
        video = load_video(sample["video_path"], cfg.num_conditioning_frames, cfg.height, cfg.width)
        return Request(sample["prompt1"], sample["prompt2"], video)

    return run_samples(cfg, pipeline, dataset, load, world)


def run_image_to_video_job(
    cfg: DictConfig, pipeline: VideoConditionalPipeline, world: World | None = None
) -> JobReport:
    """Each JSONL line's image is a one-frame conditioning video; its prompt drives the whole video."""
    dataset = ImageToVideoDataset(_data_path(cfg, "a JSONL of {image_path, prompt} lines"))
    if cfg.num_conditioning_frames != 1:
        raise ConfigError(f"num_conditioning_frames={cfg.num_conditioning_frames}: image-to-video conditions on 1")

    def load(sample: dict[str, Any]) -> Request:
        image = load_image(sample["image_path"], cfg.height, cfg.width)  # [3, 1, H, W]
        return Request(sample["prompt"], sample["prompt"], image)

    return run_samples(cfg, pipeline, dataset, load, world)


def run_text_to_video_job(cfg: DictConfig, pipeline: VideoConditionalPipeline, world: World | None = None) -> JobReport:
    """Text-to-video: one prompt per line of `data_path`, no conditioning."""
    dataset = TextDataset(_data_path(cfg, "a text file with one prompt per line"))
    return run_samples(cfg, pipeline, dataset, lambda sample: Request(sample["prompts"]), world)


def run_interactive_job(cfg: DictConfig, pipeline: VideoConditionalPipeline, world: World | None = None) -> JobReport:
    """Each JSONL line's prompts, switching at `switch_frame_indices` (LongLive's interactive inference)."""
    frames = switch_frames(cfg)
    dataset = InteractiveDataset(_data_path(cfg, 'a JSONL of {"prompts": [...]} lines'), len(frames))
    blocks = plan_blocks(0, cfg.num_output_frames, cfg.num_frame_per_block)
    effective = PromptSchedule(("",) * (len(frames) + 1), frames).effective_frames(blocks)
    for requested, frame in zip(frames, effective, strict=True):
        where = f"latent frame {frame}" if frame is not None else "nowhere (no block starts after it)"
        logger.info("switch_frame_indices: %d takes effect at %s", requested, where)

    def load(sample: dict[str, Any]) -> Request:
        prompts = tuple(sample["prompts"])
        return Request(prompts[0], schedule=PromptSchedule(prompts, frames))

    return run_samples(cfg, pipeline, dataset, load, world)


# -- the shared loop -----------------------------------------------------------------------------


def run_samples(
    cfg: DictConfig,
    pipeline: VideoConditionalPipeline,
    dataset,
    load: Callable[[dict[str, Any]], Request],
    world: World | None = None,
) -> JobReport:
    """Run this rank's share of `dataset`, gather every rank's records, write `results.jsonl` on rank 0.

    `dataset[idx]` parses sample `idx` (raising `SampleError`), `dataset.raw(idx)` is its line as
    written; `load` reads what the sample names (video, image) into a `Request`.
    """
    world = world or distributed.current()
    prepare_output_folder(cfg)
    # One stream over several ranks (parallel.sequence): the groups share out the samples, and the rank
    # of a group that decodes writes its outputs and records.
    group = pipeline.group
    indices = distributed.shard(_limit(cfg, len(dataset)), world if group is None else group.shard_world)
    existing = find_outputs(cfg)
    if pipeline.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(pipeline.device)

    records = []
    for idx in tqdm(indices, desc=f"samples (rank {world.rank})", unit="sample", disable=not world.is_main):
        records.append(_run_sample(cfg, pipeline, dataset, load, idx, world, existing))
        if len(records) == 1:
            log_first_sample()  # what the new process's compiling and graph capture cost

    gathered = distributed.gather((pipeline.decodes, records), world)
    records = sorted((r for writes, part in gathered if writes for r in part), key=lambda r: r.index)
    results_path = Path(cfg.output_folder) / RESULTS_FILE
    if world.is_main:
        write_results(results_path, records)
    distributed.barrier(world)  # no rank leaves before the results are on disk
    if pipeline.device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(pipeline.device) / 1024**3
        logger.info("peak VRAM %.2f GiB on %s", peak, pipeline.device)
    return JobReport(records, results_path)


def _run_sample(
    cfg: DictConfig,
    pipeline: VideoConditionalPipeline,
    dataset,
    load: Callable[[dict[str, Any]], Request],
    idx: int,
    world: World,
    existing: dict[tuple[int, int], Path],
) -> SampleRecord:
    """Sample `idx`, every seed not yet done; user errors end up in the record, bugs propagate."""
    start = time.perf_counter()
    record = SampleRecord(index=idx, status="ok", inputs={}, seeds=sample_seeds(cfg, idx), rank=world.rank)
    timings = {"load_s": 0.0, "generate_s": 0.0, "write_s": 0.0}
    outputs: dict[int, Path] = {}  # seed -> mp4, found or written
    try:
        sample = dataset[idx]
        record.inputs = {key: value for key, value in sample.items() if key != "idx"}
        if not cfg.overwrite:
            outputs = {seed: existing[idx, seed] for seed in record.seeds if (idx, seed) in existing}
        todo = [seed for seed in record.seeds if seed not in outputs]
        if not todo:
            record.status = "skipped"
            logger.info("sample %d: already done (%s), skipped", idx, ", ".join(p.name for p in outputs.values()))
        else:
            require_video_writer()  # before the rollout, not after it
            tick = time.perf_counter()
            request = load(sample)
            timings["load_s"] = time.perf_counter() - tick
            if request.schedule is not None:
                record.switches = _switch_records(cfg, request.schedule)
        for seed in todo:
            path = output_path(cfg, idx, seed, world.rank)
            written = write_sample(cfg, pipeline, request, path, seed, timings, progress=world.is_main)
            if written is None:  # another rank of this stream's group decodes and writes
                continue
            outputs[seed] = written
            _remove_stale(existing.get((idx, seed)), outputs[seed])
            logger.info("sample %d (seed %d) -> %s", idx, seed, outputs[seed])
    except BlankLine as err:
        record.status, record.error, record.inputs = "skipped", str(err), {"line": dataset.raw(idx)}
        logger.info("sample %d skipped: %s", idx, err)
    except SAMPLE_ERRORS as err:
        record.status, record.error = "failed", str(err)
        record.inputs = record.inputs or {"line": dataset.raw(idx)}
        logger.error("sample %d failed: %s", idx, err)
    done = [outputs[seed] for seed in record.seeds if seed in outputs]
    record.outputs = [str(path) for path in done]
    if cfg.save_latents:
        record.latents = [str(path) for path in map(_latents_path, done) if path.is_file()]
    timings["total_s"] = time.perf_counter() - start
    record.timings = {key: round(value, 3) for key, value in timings.items()}
    return record


def _switch_records(cfg: DictConfig, schedule: PromptSchedule) -> list[dict[str, int | None]]:
    blocks = plan_blocks(0, cfg.num_output_frames, cfg.num_frame_per_block)
    effective = schedule.effective_frames(blocks)
    return [{"requested": r, "frame": f} for r, f in zip(schedule.switch_frames, effective, strict=True)]


def write_sample(
    cfg: DictConfig,
    pipeline: VideoConditionalPipeline,
    request: Request,
    path: Path,
    seed: int,
    timings: dict[str, float],
    progress: bool = False,
) -> Path | None:
    """Stream one rollout into the mp4 at `path` as its blocks arrive (a tqdm bar over the blocks when
    `progress`); adds to `timings`' generate_s (the rollout, encoding beside it) and write_s (the
    encoder's tail and the latents after the last block).

    Atomic: the mp4 is written under a temporary name and renamed when complete, after the latents (the
    mp4 marks the seed done for resume); an error or a kill midway leaves nothing under `path`. On a
    rank of a sequence-parallel group that does not decode, runs its share of the rollout and returns None.
    """
    video = None if request.video is None else request.video.unsqueeze(0)  # [1, 3, N, H, W]
    conditioning = pipeline.geometry.latents_for_video_frames(pipeline.conditioning_video_frames(video))
    num_blocks = len(plan_blocks(conditioning, pipeline.cfg.num_output_frames, pipeline.geometry.frames_per_block))
    stream = sample_stream(pipeline, request, video, seed)
    blocks = tqdm(stream, desc=f"blocks (seed {seed})", total=num_blocks, leave=False, disable=not progress)
    tick = time.perf_counter()
    if not pipeline.decodes:  # this rank computes its share of the stream; the group's vae_rank writes
        for _ in blocks:
            pass
        timings["generate_s"] += time.perf_counter() - tick
        return None
    latents = []  # per block [F, C, h, w] copied to the host (`to_host`), only with save_latents
    arrivals = BlockArrivals(tick)
    with atomic_path(path) as temporary, FrameEncoder(temporary, cfg.fps) as encoder:
        for result in blocks:
            encoder.put(result.frames[0])  # [3, n, H, W]
            arrivals.add(result.frames.shape[2])
            if cfg.save_latents:  # without waiting: a plain .cpu() would stall the GPU at every block
                latents.append(to_host(result.latents[0].float()))
        timings["generate_s"] += time.perf_counter() - tick
        timings.setdefault("first_block_s", arrivals.first_block_s)
        timings.setdefault("second_half_fps", arrivals.second_half_fps)
        tick = time.perf_counter()
        encoder.close()
        if cfg.save_latents:
            write_latents(_latents_path(path), torch.cat([landed(copy) for copy in latents], dim=0))
    timings["write_s"] += time.perf_counter() - tick
    return path


class BlockArrivals:
    """When each block of a rollout reached the encoder, for two figures per sample: the first block's
    delay (in a new process: compiling, CUDA-graph capture) and frames/s over the second half of the
    blocks (the steady rate, startup excluded, encoder back-pressure included). One float pair per block."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.times: list[float] = []
        self.frames: list[int] = []

    def add(self, frames: int) -> None:
        self.times.append(time.perf_counter())
        self.frames.append(frames)

    @property
    def first_block_s(self) -> float:
        return self.times[0] - self.start if self.times else 0.0

    @property
    def second_half_fps(self) -> float:
        """Frames of the blocks after the middle one over the time since the middle one (0 under 2 blocks)."""
        middle = (len(self.times) - 1) // 2
        seconds = self.times[-1] - self.times[middle] if self.times else 0.0
        return sum(self.frames[middle + 1 :]) / seconds if seconds > 0 else 0.0


def sample_stream(
    pipeline: VideoConditionalPipeline, request: Request, video: torch.Tensor | None, seed: int
) -> Iterator[BlockResult]:
    """The blocks of one sample's rollout, as the job consumes them: a prompt schedule (interactive) decodes
    each block beside the next one's passes when `parallel.overlap_decode` is on."""
    if request.schedule is None:
        return pipeline.stream(request.prompt1, request.prompt2, video, seed=seed)
    overlap = pipeline.overlaps_decode
    stream = pipeline.stream_prompts(request.schedule, video, seed=seed, decode=not overlap)
    return decode_alongside(stream, pipeline.decoder) if overlap else stream


def _latents_path(video_path: Path) -> Path:
    return video_path.with_suffix(".pt")


def _remove_stale(stale: Path | None, path: Path) -> None:
    """With overwrite, an old output under another rank's name goes once the new one is written."""
    if stale is not None and stale != path:
        stale.unlink(missing_ok=True)
        _latents_path(stale).unlink(missing_ok=True)


def write_results(path: Path, records: list[SampleRecord]) -> Path:
    """`results.jsonl`, one record per line by sample index, written atomically."""
    with atomic_path(path) as temporary, open(temporary, "w", encoding="utf-8") as file:
        for record in records:
            file.write(json.dumps(asdict(record), ensure_ascii=False) + "\n")
    return path


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """The records of a `results.jsonl`."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
