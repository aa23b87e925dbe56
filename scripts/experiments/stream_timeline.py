"""Where a stream's block time goes on the GPU, per rank: busy and idle time, kernels by kind, and how much
of the communication ran beside compute (issue 18).

`longlive bench` gives the generator's and the decode's time per block; it cannot say whether the GPU
sat idle inside them (waiting on an exchange, or on the host) nor whether work on two streams (the
decode beside the next block, `overlap_decode`; NCCL beside compute) really ran at once. This profiles
a few steady blocks end to end (generation and decode, after a full warm-up run) and reads the kernels
from the trace:

    torchrun --nproc_per_node=2 scripts/experiments/stream_timeline.py --config_path \
        configs/longlive_video_conditional_inference.yaml --out /tmp/timeline -- KEY=VALUE ...

Each rank writes `rank{R}.json`: wall seconds of the profiled blocks, the union of all kernels' intervals
(busy), idle = wall - busy, busy per CUDA stream, device time per kind of kernel (nccl, attention, gemm,
conv, triton, other; summed, so overlapping kinds count twice) and the time NCCL kernels ran while a
compute kernel ran too, plus the 15 kernels with the most device time. Runs on one process too (no
torchrun: `parallel.sequence` must then be 1).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from longlive import distributed
from longlive.benchmark import _sync, benchmark_pipeline
from longlive.compile_cache import enable_compile_cache
from longlive.config import load_config
from longlive.parallel import stream_group
from longlive.pipeline import resolve_device

KINDS = (
    ("nccl", ("nccl",)),
    ("attention", ("fmha", "flash", "sdpa", "attention", "attn")),
    ("gemm", ("gemm", "nvjet", "cutlass", "matmul")),
    ("conv", ("conv", "fprop", "dgrad", "wgrad", "winograd")),
    ("triton", ("triton",)),
)


def kind_of(name: str) -> str:
    lowered = name.lower()
    for kind, needles in KINDS:
        if any(needle in lowered for needle in needles):
            return kind
    return "other"


def union_length(intervals: list[tuple[float, float]]) -> float:
    """Total length covered by intervals [(start, end)] (microseconds)."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


def overlap_length(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    """Length of time covered by both interval sets."""
    return union_length(a) + union_length(b) - union_length(a + b)


def summarise(trace: dict, wall_s: float) -> dict:
    kernels = [e for e in trace.get("traceEvents", []) if e.get("cat") == "kernel" and "dur" in e]
    spans = [(float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in kernels]
    by_stream: dict[str, list] = defaultdict(list)
    by_kind: dict[str, float] = defaultdict(float)
    by_name: dict[str, float] = defaultdict(float)
    comm, compute = [], []
    for event, span in zip(kernels, spans, strict=True):
        by_stream[str(event.get("args", {}).get("stream", "?"))].append(span)
        kind = kind_of(event["name"])
        by_kind[kind] += span[1] - span[0]
        by_name[event["name"][:120]] += span[1] - span[0]
        (comm if kind == "nccl" else compute).append(span)
    busy_ms = union_length(spans) / 1000
    return {
        "wall_ms": round(1000 * wall_s, 1),
        "kernels": len(kernels),
        "busy_ms": round(busy_ms, 1),
        "idle_ms": round(1000 * wall_s - busy_ms, 1),
        "busy_ms_per_stream": {s: round(union_length(v) / 1000, 1) for s, v in sorted(by_stream.items())},
        "kernel_ms_by_kind": {k: round(v / 1000, 1) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
        "compute_busy_ms": round(union_length(compute) / 1000, 1),
        "nccl_busy_ms": round(union_length(comm) / 1000, 1),
        "nccl_beside_compute_ms": round(overlap_length(comm, compute) / 1000, 1),
        "top_kernels_ms": {n: round(v / 1000, 2) for n, v in sorted(by_name.items(), key=lambda kv: -kv[1])[:15]},
    }


def profile_steady_blocks(cfg, world: distributed.World, skip: int, blocks: int) -> tuple[dict, float]:
    """Warm up with one whole run, then profile blocks [skip, skip + blocks) of a second one end to end.
    Called inside `distributed.launch`, so the pipeline (CUDA graphs with NCCL calls) is gone before it ends."""
    from torch.profiler import ProfilerActivity, profile

    group = stream_group(world, cfg.parallel.sequence, cfg.parallel.vae_rank)
    pipe = benchmark_pipeline(cfg, world.device, group)
    pipe("timeline", seed=0)
    stream = pipe.stream("timeline", seed=0)
    for _ in range(skip):
        next(stream)
    _sync(pipe.device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        for _ in range(blocks):
            next(stream)
        _sync(pipe.device)
        wall = time.perf_counter() - start
    for _ in stream:  # finish the rollout: every rank of the group runs every pass
        pass
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "trace.json")
        prof.export_chrome_trace(path)
        trace = json.loads(Path(path).read_text())
    return trace, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config_path", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--skip", type=int, default=4, help="blocks before the profiled ones")
    parser.add_argument("--blocks", type=int, default=4, help="blocks profiled")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    cfg = load_config(args.config_path, args.overrides)
    enable_compile_cache(cfg.compile_cache_dir)
    with distributed.launch(resolve_device(cfg.device)) as world:
        trace, wall = profile_steady_blocks(cfg, world, args.skip, args.blocks)
        rank = world.rank
    summary = {"blocks": args.blocks, "rank": rank, **summarise(trace, wall)}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, f"rank{rank}.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "top_kernels_ms"}))


if __name__ == "__main__":
    main()
