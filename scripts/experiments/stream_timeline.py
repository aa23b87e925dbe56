"""Where a stream's block time goes on the GPU, per rank: busy and idle time, kernels by kind, how much of
the communication ran beside compute, and where the idle time comes from (issue 18).

`longlive bench` gives the generator's and the decode's time per block; it cannot say whether the GPU
sat idle inside them (waiting on an exchange, or on the host) nor whether work on two streams (the
decode beside the next block, `overlap_decode`; NCCL beside compute) really ran at once. This profiles
a few steady blocks end to end (generation and decode, after a full warm-up run) and reads the trace:

    torchrun --nproc_per_node=2 scripts/experiments/stream_timeline.py --config_path \
        configs/longlive_video_conditional_inference.yaml --out /tmp/timeline [--with_stack] [--keep_trace] \
        -- KEY=VALUE ...

(`scripts/experiments/stream_timeline_2gpu.sh`: the runs issue 18 needs, on two GPUs, in one call.)

Each rank writes `rank{R}.json`:
- wall ms of the profiled blocks; busy = the union of all GPU activity (kernels, copies, memsets); idle =
  wall - busy; busy per CUDA stream; device time per kind of kernel (nccl, attention, gemm, conv, triton,
  other; summed, so overlapping kinds count twice); NCCL time beside compute; the 15 costliest kernels;
- `idle_gaps`: every stretch of the window without GPU activity: a histogram of lengths (count and ms per
  bin); count and ms by the kinds of kernel on either side ("nccl>gemm"); the `--gaps` longest ones with
  their offset in their block, length, the activities before and after, the host at the gap's start (the
  pipeline's `record_function` labels, the innermost op or CUDA call, e.g. a `cudaStreamSynchronize`) and
  when the host launched the activity that ended it (`launch_us` > 0: after the gap began, the host was
  late, CPU-bound or waiting; < 0: queued in time, the GPU waited on another stream or rank);
- `host_waits`: host time in the CUDA calls that can block it (synchronizations, copies, allocations),
  count per block and who issued them (the innermost Python frame of the engine with `--with_stack`,
  which slows the host, else the innermost op and labels);
- `host_ops_per_block`: host ms and calls per block in Dynamo's guard checks, compiled regions, launches;
- `labels_ms_per_block`: per pipeline label (denoise, cache pass, decode, gather...), host ms per block
  and the GPU ms of the activity launched under it (NCCL apart): a label whose host time exceeds its GPU
  time is CPU-bound.
Runs on one process too (no torchrun: `parallel.sequence` must then be 1; on the CPU only the host
side is filled).
"""

from __future__ import annotations

import argparse
import bisect
import gzip
import json
import os
import re
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
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
GPU_ACTIVITY = ("kernel", "gpu_memcpy", "gpu_memset")  # trace categories that occupy the device
GAP_EDGES_US = (20.0, 100.0, 1000.0)  # histogram bins: launch latency, short host stalls, long ones
# Host calls that can block the host until the GPU catches up (or allocate, which may synchronise).
HOST_WAITS = (
    "cudaStreamSynchronize",
    "cudaDeviceSynchronize",
    "cudaEventSynchronize",
    "cudaMemcpy",
    "cudaMemcpyAsync",
    "cudaMalloc",
    "cudaFree",
    "cudaHostAlloc",
    "cudaFreeHost",
)
# Host ops counted per block (by name prefix): Dynamo's guard checks and compiled regions, launches.
HOST_OPS = (
    "TorchDynamo Cache Lookup",
    "Torch-Compiled Region",
    "cudaLaunchKernel",
    "cuLaunchKernel",
    "cudaGraphLaunch",
    "cudaStreamWaitEvent",
    "cudaEventRecord",
)
WINDOW = "timeline window"  # the profiled section's label; each block inside it is "block {i}"
BLOCK = re.compile(r"block \d+$")
OURS = "longlive/"  # the engine's Python frames (the profiler names them from their sys.path entry on)


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


# -- idle gaps (pure: intervals in, gaps out) -------------------------------------------------------


@dataclass(frozen=True)
class Gap:
    """A stretch [start, end) of the window with no GPU activity, between `before` (the activity that
    finished last; None at the window's start) and `after` (the one that ended it; None at its end)."""

    start: float
    end: float
    before: str | None
    after: str | None

    @property
    def length(self) -> float:
        return self.end - self.start


def idle_gaps(activities: Iterable[tuple[float, float, str]], window: tuple[float, float]) -> list[Gap]:
    """The gaps of `window` that no activity (start, end, name) covers, in time order; activities may
    overlap (several streams) and reach outside the window (clipped). Their lengths sum to the window
    less the activities' union inside it."""
    gaps, reach, last = [], window[0], None
    for start, end, name in sorted(activities):
        start, end = max(start, window[0]), min(end, window[1])
        if end <= start:
            continue
        if start > reach:
            gaps.append(Gap(reach, start, last, name))
        if end > reach:
            reach, last = end, name
    if window[1] > reach:
        gaps.append(Gap(reach, window[1], last, None))
    return gaps


def gap_histogram(gaps: Iterable[Gap], edges: Sequence[float] = GAP_EDGES_US) -> dict[str, dict]:
    """Count and total ms of gaps per length bin ("<20us", "20-100us", "100-1000us", ">=1000us")."""
    inner = [f"{a:g}-{b:g}us" for a, b in zip(edges, edges[1:], strict=False)]
    labels = [f"<{edges[0]:g}us", *inner, f">={edges[-1]:g}us"]
    bins = {label: {"count": 0, "ms": 0.0} for label in labels}
    for gap in gaps:
        entry = bins[labels[bisect.bisect_right(edges, gap.length)]]
        entry["count"] += 1
        entry["ms"] += gap.length / 1000
    return {label: {"count": b["count"], "ms": round(b["ms"], 2)} for label, b in bins.items()}


def gap_transitions(gaps: Iterable[Gap], top: int = 8) -> dict[str, dict]:
    """Count and ms of gaps by the kinds of activity on either side ("nccl>gemm"; "start"/"end" for the
    window's edges), the `top` costliest: short gaps at NCCL boundaries are the streams' waits on each other
    (inside a CUDA graph too), short ones between convolutions a host that launches too slowly."""
    count: Counter = Counter()
    total: dict[str, float] = defaultdict(float)
    for gap in gaps:
        before = "start" if gap.before is None else kind_of(gap.before)
        after = "end" if gap.after is None else kind_of(gap.after)
        key = f"{before}>{after}"
        count[key] += 1
        total[key] += gap.length / 1000
    ranked = sorted(total, key=lambda k: -total[k])[:top]
    return {key: {"count": count[key], "ms": round(total[key], 2)} for key in ranked}


class Ranges:
    """Named host ranges (start, end, name) of one thread, nested as a thread's calls are: which of them
    are open at a given time."""

    def __init__(self, ranges: Iterable[tuple[float, float, str]]) -> None:
        self.ranges = sorted(ranges, key=lambda r: (r[0], -r[1]))  # an outer range before one starting with it
        self.starts = [r[0] for r in self.ranges]
        self.parents: list[int] = []  # the range each one is nested in (-1: none)
        open_: list[int] = []
        for start, _, _ in self.ranges:
            while open_ and self.ranges[open_[-1]][1] < start:
                open_.pop()
            self.parents.append(open_[-1] if open_ else -1)
            open_.append(len(self.parents) - 1)

    def innermost(self, t: float, keep=lambda name: True) -> str | None:
        """The innermost range open at `t` whose name `keep` accepts, or None. Every range open at `t` holds
        the latest one starting before it, so only that one and its parents are read."""
        i = bisect.bisect_right(self.starts, t) - 1
        while i >= 0:
            start, end, name = self.ranges[i]
            if end >= t and keep(name):
                return name
            i = self.parents[i]
        return None

    def open_at(self, t: float) -> list[tuple[float, float, str]]:
        """Every range open at `t`, outermost first (a linear scan: for the few labels)."""
        return [r for r in self.ranges if r[0] <= t <= r[1]]


def label_path(labels: Ranges, t: float) -> str:
    """The pipeline labels open at `t`, outermost first ("block 5/decode/gather"); "-" for none."""
    return "/".join(name for _, _, name in labels.open_at(t) if name != WINDOW) or "-"


def short(name: str | None, size: int = 70) -> str | None:
    return None if name is None else name[:size]


# -- reading a trace ------------------------------------------------------------------------------------


@dataclass
class Trace:
    """The events of one rank's Kineto trace that the summary reads, indexed."""

    activities: list[dict]  # GPU kernels, copies, memsets
    runtime: list[dict]  # CUDA runtime and driver calls on the host
    launches: dict[int, dict]  # runtime call by correlation id (what launched an activity)
    labels: Ranges  # record_function ranges of the main thread
    ops: Ranges  # aten ops and CUDA calls of the main thread
    python: Ranges  # Python frames of the main thread (--with_stack; else empty)
    window: tuple[float, float]
    blocks: list[tuple[float, float, str]]
    thread: int  # the main thread's id: the one that ran the profiled blocks

    @classmethod
    def read(cls, trace: dict) -> Trace:
        events = [e for e in trace.get("traceEvents", []) if e.get("ph") == "X" and "dur" in e]
        marks = [e for e in events if e.get("cat") == "user_annotation" and e["name"] == WINDOW]
        if not marks:
            raise ValueError(f"the trace has no {WINDOW!r} range (was it profiled by this script?)")
        mark = marks[0]
        thread = mark["tid"]

        def spans(cats: tuple[str, ...]) -> list[tuple[float, float, str]]:
            return [_span(e) for e in events if e.get("cat") in cats and e.get("tid") == thread]

        runtime = [e for e in events if e.get("cat") in ("cuda_runtime", "cuda_driver")]
        labels = Ranges(spans(("user_annotation",)))
        return cls(
            activities=[e for e in events if e.get("cat") in GPU_ACTIVITY],
            runtime=runtime,
            launches={e["args"]["correlation"]: e for e in runtime if "correlation" in e.get("args", {})},
            labels=labels,
            ops=Ranges(spans(("cpu_op", "cuda_runtime", "cuda_driver"))),
            python=Ranges(spans(("python_function",))),
            window=_span(mark)[:2],
            blocks=[r for r in labels.ranges if BLOCK.match(r[2])],
            thread=thread,
        )

    def block_of(self, t: float) -> tuple[str, float] | None:
        """The block whose host range holds `t`, and `t`'s offset in it (us). When the GPU is idle it has
        run all the host launched, so the host's block is the GPU's too."""
        for start, end, name in self.blocks:
            if start <= t <= end:
                return name, t - start
        return None

    def launch_of(self, activity: dict) -> dict | None:
        return self.launches.get(activity.get("args", {}).get("correlation"))

    def issuer(self, t: float) -> str:
        """Who issued a host call at `t`: the innermost Python frame of the engine (with stacks), else
        the innermost aten op and the open labels."""
        frame = self.python.innermost(t, lambda name: name.startswith(OURS))
        if frame is not None:
            return frame
        op = self.ops.innermost(t, lambda name: name.startswith("aten::"))
        return f"{label_path(self.labels, t)}: {op or '-'}"


def _span(event: dict) -> tuple[float, float, str]:
    return float(event["ts"]), float(event["ts"]) + float(event["dur"]), event["name"]


def describe_gaps(trace: Trace, gaps: list[Gap], count: int) -> list[dict]:
    """The `count` longest gaps, where they lie and what the host was doing when each began."""
    after_launch = {}  # the activity that ended each gap, by its start time
    for activity in trace.activities:
        after_launch.setdefault(float(activity["ts"]), trace.launch_of(activity))
    rows = []
    for gap in sorted(gaps, key=lambda g: -g.length)[:count]:
        block = trace.block_of(gap.start)
        launch = after_launch.get(gap.end)
        row = {
            "us": round(gap.length, 1),
            "block": block[0] if block else None,
            "at_us": round(block[1]) if block else None,
            "before": short(gap.before),
            "after": short(gap.after),
            "host_labels": label_path(trace.labels, gap.start),
            "host_op": short(trace.ops.innermost(gap.start)),
        }
        if launch is not None:
            row["launch_us"] = round(float(launch["ts"]) - gap.start, 1)
            row["launch_labels"] = label_path(trace.labels, float(launch["ts"]))
        if trace.python.ranges:
            row["host_python"] = short(trace.python.innermost(gap.start, lambda name: name.startswith(OURS)))
        rows.append(row)
    return rows


def copy_kinds(trace: Trace) -> dict[int, str]:
    """A copy's direction ("DtoH (Device -> Pageable)", ...) by the correlation id of its host call."""
    kinds = {}
    for activity in trace.activities:
        if activity.get("cat") == "gpu_memcpy" and "correlation" in activity.get("args", {}):
            kinds[activity["args"]["correlation"]] = activity["name"].removeprefix("Memcpy ")
    return kinds


def host_waits(trace: Trace, blocks: int) -> dict[str, dict]:
    """Host ms, calls per block and the top issuers of each CUDA call that can block the host (copies by
    direction) inside the window; calls of other threads than the loop's apart."""
    directions = copy_kinds(trace)
    time_ms: dict[str, float] = defaultdict(float)
    issuers: dict[str, Counter] = defaultdict(Counter)
    for call in trace.runtime:
        start, end, name = _span(call)
        if name not in HOST_WAITS or not trace.window[0] <= start <= trace.window[1]:
            continue
        direction = directions.get(call.get("args", {}).get("correlation"))
        key = f"{name} {direction}" if direction else name
        main = call.get("tid") == trace.thread
        key = key if main else f"{key} (other threads)"  # e.g. a writer thread's wait: not the loop's
        time_ms[key] += (end - start) / 1000
        issuers[key][short(trace.issuer(start), 90) if main else str(call.get("tid"))] += 1
    return {
        key: {
            "ms": round(time_ms[key], 2),
            "per_block": round(sum(issuers[key].values()) / blocks, 1),
            "by": dict(issuers[key].most_common(4)),
        }
        for key in sorted(time_ms, key=lambda k: -time_ms[k])
    }


def label_times(trace: Trace, blocks: int) -> dict[str, dict]:
    """Per pipeline label ("block N" ranges apart), host ms per block and the GPU ms per block of the activity
    launched under it as its innermost label (NCCL counted apart)."""
    host: dict[str, float] = defaultdict(float)
    gpu: dict[str, float] = defaultdict(float)
    nccl: dict[str, float] = defaultdict(float)
    for start, end, name in trace.labels.ranges:
        if name != WINDOW and not BLOCK.match(name):
            host[name] += end - start
    for activity in trace.activities:
        launch = trace.launch_of(activity)
        if launch is None:
            continue
        label = trace.labels.innermost(float(launch["ts"]), lambda n: n != WINDOW and not BLOCK.match(n)) or "-"
        (nccl if kind_of(activity["name"]) == "nccl" else gpu)[label] += float(activity["dur"])
    names = sorted(set(host) | set(gpu) | set(nccl), key=lambda n: -host.get(n, 0))
    per_block = 1000 * blocks
    return {
        n: {key: round(d[n] / per_block, 2) for key, d in (("host", host), ("gpu", gpu), ("nccl", nccl))} for n in names
    }


def host_ops(trace: Trace, blocks: int) -> dict[str, dict]:
    """Host ms and calls per block of the main thread's ops named in HOST_OPS (by prefix): how much of the host's
    time goes to Dynamo's guards and compiled-region entries and to launches (nested regions count twice)."""
    time_ms: dict[str, float] = defaultdict(float)
    calls: Counter = Counter()
    for start, end, name in trace.ops.ranges:
        prefix = next((p for p in HOST_OPS if name.startswith(p)), None)
        if prefix is not None and trace.window[0] <= start <= trace.window[1]:
            time_ms[prefix] += (end - start) / 1000
            calls[prefix] += 1
    return {
        p: {"ms": round(time_ms[p] / blocks, 2), "calls": round(calls[p] / blocks, 1)}
        for p in sorted(time_ms, key=lambda k: -time_ms[k])
    }


def summarise(trace: dict, wall_s: float, blocks: int = 1, gaps: int = 12) -> dict:
    """The rank's summary (see the module doc) of a trace profiled by `profile_steady_blocks`."""
    read = Trace.read(trace)
    kernels = [e for e in read.activities if e.get("cat") == "kernel"]
    spans = [(float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in read.activities]
    by_stream: dict[str, list] = defaultdict(list)
    by_kind: dict[str, float] = defaultdict(float)
    by_name: dict[str, float] = defaultdict(float)
    comm, compute = [], []
    for event, span in zip(read.activities, spans, strict=True):
        by_stream[str(event.get("args", {}).get("stream", "?"))].append(span)
        if event.get("cat") != "kernel":
            continue
        kind = kind_of(event["name"])
        by_kind[kind] += span[1] - span[0]
        by_name[event["name"][:120]] += span[1] - span[0]
        (comm if kind == "nccl" else compute).append(span)
    busy_ms = union_length(spans) / 1000
    found = idle_gaps(((*span, event["name"]) for event, span in zip(read.activities, spans, strict=True)), read.window)
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
        "idle_gaps": {
            "window_ms": round((read.window[1] - read.window[0]) / 1000, 1),
            "histogram": gap_histogram(found),
            "by_kinds": gap_transitions(found),
            "longest": describe_gaps(read, found, gaps),
        },
        "host_waits": host_waits(read, blocks),
        "labels_ms_per_block": label_times(read, blocks),
        "host_ops_per_block": host_ops(read, blocks),
        "top_kernels_ms": {n: round(v / 1000, 2) for n, v in sorted(by_name.items(), key=lambda kv: -kv[1])[:15]},
    }


def profile_steady_blocks(
    cfg, world: distributed.World, skip: int, blocks: int, with_stack: bool = False
) -> tuple[dict, float]:
    """Warm up with one whole run, then profile blocks [skip, skip + blocks) of a second one end to end.
    Called inside `distributed.launch`, so the pipeline (CUDA graphs with NCCL calls) is gone before it ends."""
    from torch.profiler import ProfilerActivity, profile, record_function

    group = stream_group(world, cfg.parallel.sequence, cfg.parallel.vae_rank)
    pipe = benchmark_pipeline(cfg, world.device, group)
    pipe("timeline", seed=0)
    stream = pipe.stream("timeline", seed=0)
    for _ in range(skip):
        next(stream)
    _sync(pipe.device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if pipe.device.type == "cuda" else [])
    with profile(activities=activities, with_stack=with_stack) as prof:
        with record_function(WINDOW):
            start = time.perf_counter()
            for index in range(skip, skip + blocks):
                with record_function(f"block {index}"):
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


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config_path", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--skip", type=int, default=4, help="blocks before the profiled ones")
    parser.add_argument("--blocks", type=int, default=4, help="blocks profiled")
    parser.add_argument("--gaps", type=int, default=12, help="longest idle gaps listed")
    parser.add_argument("--with_stack", action="store_true", help="Python frames of host calls (slows the host)")
    parser.add_argument("--keep_trace", action="store_true", help="also write rank{R}.trace.json.gz (Perfetto)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    cfg = load_config(args.config_path, args.overrides)
    enable_compile_cache(cfg.compile_cache_dir)
    with distributed.launch(resolve_device(cfg.device)) as world:
        trace, wall = profile_steady_blocks(cfg, world, args.skip, args.blocks, args.with_stack)
        rank = world.rank
    summary = {"blocks": args.blocks, "rank": rank, **summarise(trace, wall, args.blocks, args.gaps)}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, f"rank{rank}.json").write_text(json.dumps(summary, separators=(",", ":")))
    if args.keep_trace:
        with gzip.open(Path(args.out, f"rank{rank}.trace.json.gz"), "wt") as file:
            json.dump(trace, file)
    brief = ("wall_ms", "busy_ms", "idle_ms", "nccl_busy_ms", "nccl_beside_compute_ms")
    print(json.dumps({"rank": rank, **{k: summary[k] for k in brief}, "gaps": summary["idle_gaps"]["histogram"]}))
    return summary


if __name__ == "__main__":
    main()
