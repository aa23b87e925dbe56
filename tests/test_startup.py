"""Startup: random-weight generators built on the meta device equal the reference build, and the phase record
sums and names what ran (the phases of a real job are checked in test_benchmark's `bench --job`)."""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import tiny_config

from longlive import model as model_module
from longlive.components import build_generator
from longlive.model import CausalWanModel, init_random_weights, random_model
from longlive.startup import PhaseTimes


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_random_model_equals_float32_init_then_cast(tiny_arch, dtype):
    """The fast build (meta device, storage in `dtype`, one init) gives exactly the weights of the reference:
    built in float32 with PyTorch's own init, `init_random_weights` from a generator seeded alike, cast."""
    reference = CausalWanModel(tiny_arch)
    init_random_weights(reference, torch.Generator().manual_seed(7))
    expected = reference.to(dtype).state_dict()
    fast = random_model(tiny_arch, torch.device("cpu"), dtype, seed=7).state_dict()
    assert list(fast) == list(expected)
    for key, value in expected.items():
        assert fast[key].dtype == dtype and torch.equal(fast[key], value), key
    other = random_model(tiny_arch, torch.device("cpu"), dtype, seed=8).state_dict()
    assert not torch.equal(other["blocks.0.self_attn.q.weight"], expected["blocks.0.self_attn.q.weight"])


def test_random_model_refuses_a_tensor_outside_parameters(tiny_arch, monkeypatch):
    """A tensor a module keeps as a plain attribute gets no storage from `to_empty`: named, not left empty."""

    class WithTable(CausalWanModel):
        def __init__(self, arch) -> None:
            super().__init__(arch)
            self.table = torch.zeros(3)

    monkeypatch.setattr(model_module, "CausalWanModel", WithTable)
    with pytest.raises(RuntimeError, match=r"meta device: \.table"):
        random_model(tiny_arch, torch.device("cpu"), torch.float32, seed=0)


def test_build_generator_random_weights_follow_the_seed_and_log_the_phase(caplog):
    with caplog.at_level(logging.INFO, logger="longlive.startup"):
        first = build_generator(tiny_config("seed=3"), torch.device("cpu")).state_dict()
    assert "startup: generator: random weights" in caplog.text
    torch.manual_seed(99)  # the global generator plays no part
    again = build_generator(tiny_config("seed=3"), torch.device("cpu")).state_dict()
    assert all(torch.equal(first[key], again[key]) for key in first)


def test_phase_times_add_up_and_name_repeats():
    phases = PhaseTimes()
    phases.add("CUDA graphs: capture", 0.25)
    phases.add("CUDA graphs: capture", 0.5)
    with phases.phase("generator: random weights"):
        pass
    summary = phases.summary()
    assert summary["cuda_graphs_capture_s"] == 0.75 and summary["cuda_graphs_capture_count"] == 2
    assert summary["generator_random_weights_s"] >= 0 and "generator_random_weights_count" not in summary
    assert list(summary)[0] == "cuda_graphs_capture_s"  # in the order the phases first ran
    phases.reset()
    assert phases.summary() == {}
