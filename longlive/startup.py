"""Where a new process's time goes before its first video streams: startup phases, timed and logged.

A job's first sample in a new process took 99 s on an H200 with an empty compile cache and 34 s with a
filled one, of which about 4 s generate (BENCHMARKS.md). What the rest is (building the components,
their weights, Dynamo tracing, Inductor and its caches, CUDA-graph warm-up and capture) decides what to
speed up next, so each phase is timed where it happens, logged at INFO as `startup: PHASE N.NN s`, and
kept in one record per process (`PHASES`) that `longlive bench --job` puts in its JSON line.

Compilation happens inside the first calls (the first block, the CUDA graphs' warm-up runs), so its
share is read from Dynamo's own counters instead (`compile_summary`): the time Dynamo spent per
compiled region, the part of it its backend (AOTAutograd + Inductor, a cache load when warm) took, and
the number of regions and graph breaks.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

logger = logging.getLogger(__name__)


class PhaseTimes:
    """Seconds per named phase, in the order they first ran (a phase run again adds up, with a count)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self.counts[name] = self.counts.get(name, 0) + 1

    @contextmanager
    def phase(self, name: str, device: torch.device | None = None, log: bool = True) -> Iterator[None]:
        """Time the body as `name`; on a CUDA `device` the queued work is waited for at both ends, so the
        phase owns its GPU time. `log=False` for phases that run many times (logged once, by `summary`)."""
        _sync(device)
        start = time.perf_counter()
        try:
            yield
        finally:
            _sync(device)
            seconds = time.perf_counter() - start
            self.add(name, seconds)
            if log:
                logger.info("startup: %s %.2f s", name, seconds)

    def summary(self) -> dict[str, float | int]:
        """{phase_s: seconds (rounded), phase_count: n for phases run more than once}, for a JSON line."""
        out: dict[str, float | int] = {}
        for name, seconds in self.seconds.items():
            key = _key(name)
            out[f"{key}_s"] = round(seconds, 3)
            if self.counts[name] > 1:
                out[f"{key}_count"] = self.counts[name]
        return out

    def reset(self) -> None:
        self.seconds.clear()
        self.counts.clear()


# The process's record: the components are built, and the first block compiled, once per process.
PHASES = PhaseTimes()


def compile_summary() -> dict[str, float | int]:
    """What `torch.compile` cost this process so far, from Dynamo's counters: `compile_s` (every compiled
    region, tracing and backend), `compile_backend_s` (AOTAutograd + Inductor, or their cache loads),
    `compile_dynamo_s` (the difference: tracing, guards; never cached across processes), the number of
    compiled regions (`compiled_graphs`) and of graph breaks. Zeros when nothing was compiled."""
    from torch._dynamo.utils import compilation_time_metrics, counters

    total = sum(compilation_time_metrics.get("_compile.compile_inner", ()))
    backend = sum(compilation_time_metrics.get("OutputGraph.call_user_compiler", ()))
    return {
        "compile_s": round(total, 3),
        "compile_backend_s": round(backend, 3),
        "compile_dynamo_s": round(max(total - backend, 0.0), 3),
        "compiled_graphs": int(counters["stats"]["unique_graphs"]),
        "graph_breaks": int(sum(counters["graph_break"].values())),
    }


def log_compile_summary() -> dict[str, float | int]:
    """`compile_summary`, also logged at INFO (after the first sample, when the regions are compiled)."""
    summary = compile_summary()
    if summary["compiled_graphs"]:
        logger.info(
            "startup: compile %.2f s (Dynamo %.2f s, backend %.2f s) over %d graphs, %d graph breaks",
            summary["compile_s"],
            summary["compile_dynamo_s"],
            summary["compile_backend_s"],
            summary["compiled_graphs"],
            summary["graph_breaks"],
        )
    return summary


def log_first_sample() -> None:
    """After a process's first sample: the phases run many times during it (CUDA graphs' warm-up and
    capture, one per block shape) and what compiling cost, at INFO."""
    for name, seconds in PHASES.seconds.items():
        if PHASES.counts[name] > 1:
            logger.info("startup: %s %.2f s (%d times)", name, seconds, PHASES.counts[name])
    log_compile_summary()


def seconds_since_process_start() -> float | None:
    """Wall time since this process started (Linux: /proc), which covers the interpreter and the imports
    before any phase; None where /proc is not there."""
    try:
        with open("/proc/self/stat") as stat:
            start_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime
        with open("/proc/uptime") as uptime:
            now = float(uptime.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(now - start_ticks / os.sysconf("SC_CLK_TCK"), 0.0)


def _key(name: str) -> str:
    """'generator: weights' -> 'generator_weights'."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _sync(device: torch.device | None) -> None:
    # Not before CUDA is up: the phase that first touches the device owns the context's creation.
    if device is not None and device.type == "cuda" and torch.cuda.is_initialized():
        torch.cuda.synchronize(device)
