"""Flow-matching sampler formulas (longlive/sampler.py)."""

from __future__ import annotations

import itertools

import pytest
import torch

from longlive.sampler import NUM_TRAIN_TIMESTEPS, FlowMatchSampler, shifted_sigmas, warp_timesteps


def _shift(sigma: float, s: float) -> float:
    return s * sigma / (1 + (s - 1) * sigma)


def test_warp_published_steps():
    warped = warp_timesteps([1000, 750, 500, 250], 5.0)
    assert warped == pytest.approx([1000.0, 937.5, 833.3333, 625.0], rel=1e-5)


@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0, 8.0])
def test_warp_matches_closed_form(shift):
    steps = [1000, 900, 750, 600, 500, 333, 250, 100, 1]
    expected = [1000 * _shift(k / 1000, shift) for k in steps]
    assert warp_timesteps(steps, shift) == pytest.approx(expected, rel=1e-5, abs=1e-3)


def test_warp_shift_one_is_identity():
    steps = [1000.0, 750.0, 500.0, 250.0]
    assert warp_timesteps(steps, 1.0) == pytest.approx(steps, abs=1e-3)


def test_warp_keeps_steps_decreasing_and_in_range():
    warped = warp_timesteps([1000, 750, 500, 250], 5.0)
    assert all(a > b for a, b in itertools.pairwise(warped))
    assert all(0 < t <= 1000 for t in warped)
    # A shift > 1 pushes every intermediate step towards the noisy end.
    assert all(w >= s for w, s in zip(warped, [1000, 750, 500, 250], strict=True))


@pytest.mark.parametrize("shift", [1.0, 5.0])
def test_shifted_sigmas_match_closed_form(shift):
    sigmas = shifted_sigmas(shift)
    assert sigmas.shape == (NUM_TRAIN_TIMESTEPS,)
    base = 1.0 - torch.arange(NUM_TRAIN_TIMESTEPS, dtype=torch.float64) / NUM_TRAIN_TIMESTEPS
    expected = shift * base / (1 + (shift - 1) * base)
    torch.testing.assert_close(sigmas.double(), expected, atol=1e-6, rtol=1e-5)
    assert sigmas[0].item() == pytest.approx(1.0)
    assert bool((sigmas[1:] < sigmas[:-1]).all())  # strictly decreasing


def test_sampler_warp_flag():
    steps = [1000, 750, 500, 250]
    assert FlowMatchSampler(steps, shift=5.0, warp=False).timesteps == [1000.0, 750.0, 500.0, 250.0]
    assert FlowMatchSampler(steps, shift=5.0, warp=True).timesteps == pytest.approx(warp_timesteps(steps, 5.0))


def test_sigma_is_timestep_over_1000():
    sampler = FlowMatchSampler([1000, 500], shift=5.0)
    assert sampler.sigma(1000.0) == 1.0
    assert sampler.sigma(250.0) == 0.25
    assert sampler.sigma(0.0) == 0.0


@pytest.mark.parametrize("timestep", [1000.0, 937.5, 625.0, 250.0, 0.0])
def test_predict_clean_and_add_noise_formulas(timestep):
    gen = torch.Generator().manual_seed(0)
    x_t, v, x0, eps = (torch.randn(2, 3, 4, 5, generator=gen) for _ in range(4))
    sampler = FlowMatchSampler([1000, 750, 500, 250], shift=5.0)
    sigma = timestep / 1000
    torch.testing.assert_close(sampler.predict_clean(x_t, v, timestep), x_t - sigma * v)
    torch.testing.assert_close(sampler.add_noise(x0, eps, timestep), (1 - sigma) * x0 + sigma * eps)


def test_add_noise_endpoints():
    gen = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(4, 8, generator=gen), torch.randn(4, 8, generator=gen)
    sampler = FlowMatchSampler([1000], shift=5.0)
    torch.testing.assert_close(sampler.add_noise(x0, eps, 0.0), x0)
    torch.testing.assert_close(sampler.add_noise(x0, eps, 1000.0), eps)


def test_predict_clean_returns_float32_from_bfloat16():
    gen = torch.Generator().manual_seed(2)
    x_t = torch.randn(3, 4, generator=gen).bfloat16()
    v = torch.randn(3, 4, generator=gen).bfloat16()
    out = FlowMatchSampler([1000], shift=5.0).predict_clean(x_t, v, 500.0)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, x_t.float() - 0.5 * v.float())


@pytest.mark.parametrize("warp", [False, True])
def test_round_trip_with_true_flow(warp):
    gen = torch.Generator().manual_seed(3)
    x0 = torch.randn(2, 16, 3, 4, 6, generator=gen)
    eps = torch.randn(2, 16, 3, 4, 6, generator=gen)
    sampler = FlowMatchSampler([1000, 750, 500, 250], shift=5.0, warp=warp)
    for t in sampler.timesteps:
        x_t = sampler.add_noise(x0, eps, t)
        flow = eps - x0  # the flow-matching target d x_t / d sigma
        torch.testing.assert_close(sampler.predict_clean(x_t, flow, t), x0, atol=1e-5, rtol=0)
