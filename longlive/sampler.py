"""Few-step flow-matching sampler, as LongLive and Self-Forcing sample.

The network predicts the flow v; with sigma = t / 1000 the clean estimate is x0 = x_t - sigma * v,
and the next step starts from x0 re-noised with fresh noise at the next sigma. The sampler knows
nothing of blocks or caches: the pipeline calls it once per step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

NUM_TRAIN_TIMESTEPS = 1000


def shifted_sigmas(shift: float, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """The training sigma grid linspace(1, 0, N+1)[:-1], shifted s*sigma / (1 + (s-1)*sigma)."""
    sigmas = torch.linspace(1.0, 0.0, num_train_timesteps + 1)[:-1]
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def warp_timesteps(steps: Sequence[float], shift: float, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> list[float]:
    """Map nominal steps (1000, 750, ...) onto the shifted grid: step k -> t at grid index N - k."""
    grid = torch.cat([shifted_sigmas(shift, num_train_timesteps) * num_train_timesteps, torch.zeros(1)])
    return [float(grid[num_train_timesteps - int(step)]) for step in steps]


class FlowMatchSampler:
    """The denoising timesteps of one block and the two formulas between them."""

    def __init__(
        self,
        denoising_step_list: Sequence[float],
        shift: float,
        warp: bool = True,
        num_train_timesteps: int = NUM_TRAIN_TIMESTEPS,
    ) -> None:
        self.num_train_timesteps = num_train_timesteps
        steps = [float(s) for s in denoising_step_list]
        self.timesteps = warp_timesteps(steps, shift, num_train_timesteps) if warp else steps

    def sigma(self, timestep: float) -> float:
        return timestep / self.num_train_timesteps

    def predict_clean(self, noisy: torch.Tensor, flow: torch.Tensor, timestep: float) -> torch.Tensor:
        """x0 = x_t - sigma * v (in float32)."""
        return noisy.float() - self.sigma(timestep) * flow.float()

    def add_noise(self, clean: torch.Tensor, noise: torch.Tensor, timestep: float) -> torch.Tensor:
        """x_t = (1 - sigma) * x0 + sigma * eps."""
        sigma = self.sigma(timestep)
        return (1 - sigma) * clean + sigma * noise
