"""Shared tiny fixtures: the real code path at a size that runs on CPU in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from longlive.config import PRESETS, WanArchitecture, load_config
from longlive.model import CausalWanModel, init_random_weights

REPO = Path(__file__).resolve().parents[1]
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
