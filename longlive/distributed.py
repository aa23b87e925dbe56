"""Everything distributed, in one place: detect torchrun, shard samples, gather results.

    python video_conditional_inference.py --config_path ...                          # one process
    torchrun --nproc_per_node=N video_conditional_inference.py --config_path ...     # N ranks

torchrun is detected once, from the environment it sets (RANK, WORLD_SIZE, LOCAL_RANK). With more
than one rank the process group is NCCL on CUDA and gloo on CPU, and each rank uses `cuda:LOCAL_RANK`.
Ranks share nothing while they work: sample `i` belongs to rank `i % world_size` (round-robin; no
padding, no dropped tail, no duplicates), and the only collectives are one gather of the per-sample
records and one barrier at the end. Nothing here touches a model.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Ranks that finish early wait at the final gather for the slowest one (more samples, none skipped by
# resume); NCCL's default 10 minutes is shorter than one long video. A crashed rank still ends the job
# at once: torchrun stops every worker when one exits with an error.
GATHER_TIMEOUT = timedelta(hours=12)


@dataclass(frozen=True)
class World:
    """Where this process stands: its rank among `world_size`, its slot on the node and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def detect(environ: Mapping[str, str] | None = None) -> World:
    """The torchrun rank, world size and local rank from the environment; one process when unset."""
    environ = os.environ if environ is None else environ
    if "RANK" not in environ or "WORLD_SIZE" not in environ:
        return World()
    try:
        world = World(int(environ["RANK"]), int(environ["WORLD_SIZE"]), int(environ.get("LOCAL_RANK", "0")))
    except ValueError:
        raise RuntimeError(f"RANK/WORLD_SIZE/LOCAL_RANK are not integers: {dict(environ)}") from None
    if not 0 <= world.rank < world.world_size or world.local_rank < 0:
        raise RuntimeError(f"inconsistent torchrun environment: {world}")
    return world


_current: World | None = None


def current() -> World:
    """The world this process runs in: the one `launch` set up, else what the environment says."""
    return _current if _current is not None else detect()


def device_for(world: World, name: str) -> torch.device:
    """`cuda` means `cuda:LOCAL_RANK` under torchrun (one GPU per rank); explicit indices are kept."""
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", world.local_rank if world.is_distributed else 0)
    return device


@contextmanager
def launch(device: str) -> Iterator[World]:
    """Join the process group for the block (NCCL on CUDA, gloo otherwise) on this rank's device.

    `device` is the config's (`cuda`, `cpu`, `cuda:1`); `World.device` is where this rank runs.

    Whatever holds CUDA graphs that captured the group's collectives (a sequence-parallel pipeline with
    `cuda_graphs`) must be gone before the block ends: NCCL (2.26 on) destroys a communicator only after
    every graph that uses it is destroyed, so a pipeline still referenced here hangs the exit. Build
    and use it in a function called inside the block.
    """
    global _current
    world = detect()
    world = replace(world, device=device_for(world, device))
    initialized = False
    if world.is_distributed and not dist.is_initialized():
        cuda = world.device.type == "cuda"
        if cuda:
            torch.cuda.set_device(world.device)
        backend = "nccl" if cuda else "gloo"
        dist.init_process_group(backend, timeout=GATHER_TIMEOUT, device_id=world.device if cuda else None)
        initialized = True
        logger.info("rank %d of %d: %s on %s", world.rank, world.world_size, backend, world.device)
    _current = world
    try:
        yield world
    finally:
        _current = None
        if initialized:
            gc.collect()  # a dropped pipeline in a reference cycle would keep its CUDA graphs (see above)
            dist.destroy_process_group()


def shard(indices: Sequence[T] | int, world: World) -> list[T]:
    """This rank's share of `indices` (or of `range(indices)`): every `world_size`-th, from `rank`.

    Every index lands on exactly one rank and the ranks' counts differ by at most one: no padding,
    no dropped tail (10 samples on 4 ranks: 3, 3, 2, 2). Sample `i` of a range always goes to rank
    `i % world_size`, so a rerun with the same world finds its earlier outputs where it left them.
    """
    items = range(indices) if isinstance(indices, int) else indices
    return list(items[world.rank :: world.world_size])


def gather(obj: Any, world: World) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank (picklable objects; a no-op for one process)."""
    if not world.is_distributed:
        return [obj]
    gathered: list[Any] = [None] * world.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier(world: World) -> None:
    if world.is_distributed:
        dist.barrier()
