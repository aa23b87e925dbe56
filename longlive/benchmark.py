"""Speed of the engine at a config's geometry with random weights (throughput does not depend on them).

Text-to-video rollout of `num_output_frames` latent frames; the text encoder is excluded (random
prompt embeddings), as in the reference numbers of BENCHMARKS.md. Prints one JSON line.

    longlive bench --config_path configs/longlive_video_conditional_inference.yaml \
        generator_ckpt=null lora_ckpt=null num_output_frames=30

`--job COMMAND` (`run_job_benchmark`) measures what a user gets instead: the job itself over the config's
`data_path` with the same random weights and prompt embeddings (reading inputs, writing and encoding
mp4s included, overwriting earlier outputs), as frames/s over the samples after the first (which pays
for compilation) and the process's peak host memory.
"""

from __future__ import annotations

import platform
import resource
import statistics
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch

from longlive.config import SPEED_SWITCHES
from longlive.parallel import StreamGroup
from longlive.pipeline import VideoConditionalPipeline
from longlive.presets import model_preset
from longlive.startup import PHASES, log_compile_summary, seconds_since_process_start


class RandomPrompts:
    """Stands in for the text encoder: fixed random embeddings per prompt, seeded by the prompt's text, so
    every rank of a sequence-parallel group (and every run) gets the same ones."""

    def __init__(self, text_len: int, text_dim: int, device: torch.device, dtype: torch.dtype) -> None:
        self.shape, self.device, self.dtype = (1, text_len, text_dim), device, dtype
        self._cache: dict[str, torch.Tensor] = {}

    def encode(self, prompt: str) -> torch.Tensor:
        if prompt not in self._cache:
            rng = torch.Generator(self.device).manual_seed(zlib.crc32(prompt.encode()))
            self._cache[prompt] = torch.randn(self.shape, generator=rng, device=self.device, dtype=self.dtype)
        return self._cache[prompt]


def _mark(device: torch.device) -> torch.cuda.Event | float:
    """A point in the device's work: a recorded CUDA event (no wait), or the time on a CPU."""
    if device.type != "cuda":
        return time.perf_counter()
    event = torch.cuda.Event(enable_timing=True)
    event.record(torch.cuda.current_stream(device))
    return event


def _seconds_between(a: torch.cuda.Event | float, b: torch.cuda.Event | float) -> float:
    return b - a if isinstance(a, float) else a.elapsed_time(b) / 1000


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cuda_milliseconds(fn: Callable[[], object], repeats: int = 50) -> float:
    """Mean GPU time of `fn` in ms over `repeats` calls after 3 warm-up calls (CUDA events, one sync at each
    end): the probes' timer for kernels that queue without waiting on the host
    (`scripts/experiments/fp8_attention_probe.py`, `conv_variants.py`)."""
    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats


@contextmanager
def _timer(device: torch.device, into: list[float]) -> Iterator[None]:
    _sync(device)
    start = time.perf_counter()
    yield
    _sync(device)
    into.append(time.perf_counter() - start)


def benchmark_pipeline(
    cfg, device: torch.device | None = None, group: StreamGroup | None = None
) -> VideoConditionalPipeline:
    """The config's pipeline on `device` (default: the GPU, else the CPU) with random prompt embeddings
    instead of the text encoder; `group` spreads the stream over ranks (`longlive.parallel`)."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    arch = model_preset(cfg).generator
    prompts = RandomPrompts(arch.text_len, arch.text_dim, device, getattr(torch, cfg.dtype))
    return VideoConditionalPipeline.from_config(cfg, device=device, prompts=prompts, group=group)


def run_benchmark(cfg, warmup_runs: int = 1, pipe: VideoConditionalPipeline | None = None) -> dict:
    """Warm up, then time the generator alone, the decode alone and both end to end (see the module doc).
    `pipe`: an already built (and possibly modified) `benchmark_pipeline(cfg)`, for experiments."""
    pipe = benchmark_pipeline(cfg) if pipe is None else pipe
    cfg, device = pipe.cfg, pipe.device
    prompt = "benchmark"

    for _ in range(warmup_runs):
        pipe(prompt, seed=0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    # 1. Generator alone, per block.
    generator_s: list[float] = []
    blocks = []
    stream = pipe.stream(prompt, seed=0, decode=False)
    while True:
        with _timer(device, generator_s):
            block = next(stream, None)
        if block is None:
            generator_s.pop()
            break
        blocks.append(block)

    # 2. The streaming VAE decode of those blocks (on the ranks that decode them; split: rows and gather).
    vae_s: list[float] = []
    pipe.vae.reset_decoder()
    for block in blocks if pipe.joins_decode else ():
        with _timer(device, vae_s):
            pipe.decoder.decode(block.latents)

    del blocks  # their latents would count in the memory figures below
    # 3. End to end: generation and decode, frames out per second of wall time. Each block's time (CUDA
    #    events, so the GPU is not stalled between blocks) and the memory it leaves allocated show
    #    whether a long video costs more per block.
    _sync(device)
    start = time.perf_counter()
    first_frame_s, num_latents, marks, allocated = None, 0, [_mark(device)], []
    for block in pipe.stream(prompt, seed=0):
        num_latents += block.latents.shape[1]  # (a rank of a sequence-parallel group may not decode)
        marks.append(_mark(device))
        allocated.append(torch.cuda.memory_allocated(device) / 2**30 if device.type == "cuda" else None)
        if first_frame_s is None:
            _sync(device)
            first_frame_s = time.perf_counter() - start
    _sync(device)
    total_s = time.perf_counter() - start
    num_frames = pipe.geometry.video_frames_for_latents(num_latents)
    block_s = [_seconds_between(a, b) for a, b in zip(marks, marks[1:], strict=False)]

    return {
        "fps_end_to_end": round(num_frames / total_s, 2),
        "generator_ms_per_block": round(1000 * _median(generator_s), 1),
        "vae_ms_per_block": round(1000 * _median(vae_s), 1) if vae_s else None,
        "first_frame_s": round(first_frame_s, 3),
        "total_s": round(total_s, 3),
        "video_frames": num_frames,
        **steady_state(block_s, allocated),
        "peak_vram_gib": _gib(torch.cuda.max_memory_allocated, device),
        "peak_vram_reserved_gib": _gib(torch.cuda.max_memory_reserved, device),
        "workload": workload(cfg, device),
    }


def workload(cfg, device: torch.device) -> dict:
    """What was measured, for the JSON line."""
    return {
        "model": cfg.model_name,
        "latent_frames": cfg.num_output_frames,
        "frames_per_block": cfg.num_frame_per_block,
        "window": cfg.model_kwargs.local_attn_size,
        "sink": cfg.model_kwargs.sink_size,
        "rope": "window-relative" if cfg.model_kwargs.use_infinite_attention else "absolute",
        "steps": len(cfg.denoising_step_list),
        "dtype": cfg.dtype,
        "resolution": [cfg.height, cfg.width],
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "switches": [name for name in SPEED_SWITCHES if cfg.get(name)],
        "sequence_parallel": cfg.parallel.sequence,
        "decode": _decode_placement(cfg),
    }


def _decode_placement(cfg) -> str:
    """Where a group's decode runs: on the vae_rank, or split by rows over the group; and when."""
    placement = "split" if cfg.parallel.split_decode and cfg.parallel.sequence > 1 else "one-rank"
    return f"{placement}, overlapped" if cfg.parallel.overlap_decode else placement


def run_job_benchmark(cfg, job: Callable, command: str) -> dict:
    """Run `job` (a `longlive.jobs.run_*_job`) on a `benchmark_pipeline(cfg)` and report its speed and host
    memory: `fps_job` over the samples after the first (all of them when there is one), `fps_job_all`
    over the whole job's wall time, each sample's seconds, its first block's delay and its frames/s over
    its second half (the steady rate of a one-sample job), peak and final host RSS, and the startup
    phases (`startup_report`)."""
    before_build_s = seconds_since_process_start()
    PHASES.reset()  # this job's phases only (a process that ran something before)
    with PHASES.phase("pipeline: build"):
        pipe = benchmark_pipeline(cfg)
    start = time.perf_counter()
    report = job(cfg, pipe)
    wall_s = time.perf_counter() - start
    done = [r for r in report.records if r.status == "ok"]
    if not done:
        raise ValueError(f"the job wrote no video ({'; '.join(report.failed) or 'no samples in data_path'})")
    frames = pipe.geometry.video_frames_for_latents(cfg.num_output_frames) * cfg.num_samples  # per sample
    steady = done[1:] or done
    return {
        "job": command,
        "fps_job": round(frames * len(steady) / sum(r.timings["total_s"] for r in steady), 2),
        "fps_job_all": round(frames * len(done) / wall_s, 2),
        "samples": len(done),
        "video_frames_per_sample": frames,
        "sample_s": [r.timings["total_s"] for r in done],
        "generate_s": [r.timings["generate_s"] for r in done],
        "write_s": [r.timings["write_s"] for r in done],
        "first_block_s": [r.timings["first_block_s"] for r in done],
        "second_half_fps": [round(r.timings["second_half_fps"], 2) for r in done],
        "startup": startup_report(before_build_s, done[0].timings["first_block_s"]),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),  # KiB on Linux
        "rss_gib_at_end": round(current_rss_bytes() / 2**30, 2),
        "peak_vram_gib": _gib(torch.cuda.max_memory_allocated, pipe.device),
        "workload": workload(cfg, pipe.device),
    }


def startup_report(before_build_s: float | None, first_block_s: float) -> dict:
    """Where the process's time went before its video streamed (`longlive.startup`): the interpreter and
    imports before the build (`process_before_build_s`), each build phase, the CUDA graphs' warm-up and
    capture over the whole job, what compiling cost (Dynamo tracing apart from its backend), and the
    first sample's delay to its first block."""
    return {
        "process_before_build_s": None if before_build_s is None else round(before_build_s, 3),
        **PHASES.summary(),
        **log_compile_summary(),
        "first_sample_first_block_s": first_block_s,
    }


def current_rss_bytes() -> int:
    """This process's resident memory now (Linux /proc; the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def profile_block(cfg, blocks: int = 3, rows: int = 25, pipe: VideoConditionalPipeline | None = None) -> str:
    """Where the time of the first `blocks` blocks goes (denoising and decode; the cache passes of all but
    the last, which runs after the block is handed back): the profiler's table of ops by device time."""
    from torch.profiler import ProfilerActivity, profile

    pipe = benchmark_pipeline(cfg) if pipe is None else pipe
    device = pipe.device
    pipe("profile", seed=0)  # warm-up (and compilation, when switched on)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for index, _ in enumerate(pipe.stream("profile", seed=0)):
            if index + 1 == blocks:
                break
        _sync(device)
    sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    return prof.key_averages().table(sort_by=sort, row_limit=rows, max_name_column_width=70)


def steady_state(block_s: Sequence[float], allocated: Sequence[float | None]) -> dict:
    """Per-block end-to-end time (ms, median) over the first and the last tenth of the blocks after the
    first (at least one block each), and GPU memory allocated (GiB) after the first block, after the first
    tenth and after the last: equal times and equal memory from the first tenth on mean a long video costs
    the same per frame as a short one (the first blocks may still be filling the caches). None where not
    measured."""
    steady = list(block_s[1:]) or list(block_s)
    tenth = max(1, len(steady) // 10)
    marks = (allocated[0], allocated[min(tenth, len(allocated) - 1)], allocated[-1]) if allocated else (None,) * 3
    first, after_tenth, last = (None if gib is None else round(gib, 3) for gib in marks)
    return {
        "block_ms_first_tenth": round(1000 * _median(steady[:tenth]), 1) if steady else None,
        "block_ms_last_tenth": round(1000 * _median(steady[-tenth:]), 1) if steady else None,
        "allocated_gib_after_first_block": first,
        "allocated_gib_after_first_tenth": after_tenth,
        "allocated_gib_at_end": last,
    }


def _gib(statistic: Callable[[torch.device], int], device: torch.device) -> float | None:
    """A CUDA memory statistic in GiB (None off CUDA). Allocated counts live tensors; reserved also counts
    what the caching allocator and the CUDA graphs' private pools hold on to, which other processes
    cannot use."""
    return round(statistic(device) / 2**30, 2) if device.type == "cuda" else None


def _median(values: Sequence[float]) -> float:
    return statistics.median(values)
