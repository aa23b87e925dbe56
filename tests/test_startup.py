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


@pytest.mark.parametrize("kind", ["attribute", "buffer"])
def test_random_model_refuses_a_tensor_outside_parameters(tiny_arch, monkeypatch, kind):
    """A tensor a module keeps as a plain attribute gets no storage from `to_empty`, a buffer storage but no
    values, and `init_random_weights` sets parameters only: named, not left undefined."""

    class WithTable(CausalWanModel):
        def __init__(self, arch) -> None:
            super().__init__(arch)
            if kind == "buffer":
                self.register_buffer("table", torch.zeros(3))
            else:
                self.table = torch.zeros(3)

    monkeypatch.setattr(model_module, "CausalWanModel", WithTable)
    with pytest.raises(RuntimeError, match=r"gives no values: \.?table"):
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


def test_compile_cache_keeps_the_dynamic_shape_profile(tmp_path, monkeypatch):
    """With compile_cache_dir, a first run compiles twice (the first size, then dynamic); a second one (a new
    process, as Dynamo sees it after a reset: its profile is read again from the folder) compiles once,
    dynamic at once. Without a job name, as PyTorch leaves it, twice again."""
    import torch._inductor.config as inductor_config

    from longlive.compile_cache import enable_compile_cache

    for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)  # restored after the test, as are the configs below
    monkeypatch.setattr(inductor_config, "fx_graph_cache", inductor_config.fx_graph_cache)
    monkeypatch.setattr(torch.compiler.config, "job_id", None)

    def graphs_for_a_growing_cache() -> int:
        """A fresh Dynamo compiles one function for a cache of 3, 6 and 9 frames: the graphs it made."""
        torch._dynamo.reset()
        made = []

        def count(graph, inputs):
            made.append(graph)
            return graph.forward

        attend = torch.compile(_attend, backend=count)
        for frames in (3, 6, 9):
            attend(torch.ones(frames, 4))
        return len(made)

    try:
        assert graphs_for_a_growing_cache() == 2  # no profile kept: the first size, then dynamic
        assert graphs_for_a_growing_cache() == 2
        enable_compile_cache(tmp_path / "cache")
        assert [graphs_for_a_growing_cache(), graphs_for_a_growing_cache()] == [2, 1]
        assert any((tmp_path / "cache" / "dynamo").glob("code_state_*"))
    finally:
        torch._dynamo.reset()


def _attend(cache: torch.Tensor) -> torch.Tensor:
    return (cache.sin() * 2).sum()
