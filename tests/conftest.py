"""Shared tiny fixtures: the real code path at a size that runs on CPU in seconds."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from longlive.config import load_config
from longlive.model import CausalWanModel, init_random_weights
from longlive.presets import PRESETS, WanArchitecture

REPO = Path(__file__).resolve().parents[1]


def script_module(relative_path: str):
    """A script of the repository (e.g. "scripts/train_demo.py") imported as a module by its file name,
    registered in `sys.modules` (dataclasses look their module up there)."""
    path = REPO / relative_path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


TINY_CONFIG = REPO / "configs" / "tiny_video_conditional.yaml"


@pytest.fixture(scope="session")
def tiny_arch() -> WanArchitecture:
    return PRESETS["tiny"].generator


@pytest.fixture
def tiny_model(tiny_arch: WanArchitecture) -> CausalWanModel:
    torch.manual_seed(0)
    model = CausalWanModel(tiny_arch)
    init_random_weights(model)
    return model.eval()


def tiny_config(*overrides: str):
    return load_config(TINY_CONFIG, overrides)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread (as OMP_NUM_THREADS=1 gives torchrun workers): tiny models gain nothing from
    more, and on a busy 2-core machine they stall badly."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(nproc: int, *args: str) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node=nproc ARGS` from the repo root (gloo on CPU, one thread a rank); asserts it
    succeeded and returns it."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env |= {"OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        f"--master_port={free_port()}",
    ]
    proc = subprocess.run([*command, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc
