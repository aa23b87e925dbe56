"""Attention kernels and Wan's 3D rotary position embedding.

Kept apart from the network so a faster kernel (a backend, a compiled variant) is a change here
with the plain SDPA path as its reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def attention(
    queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Multi-head attention on [B, N, H, D] queries over [B, M, H, D] keys/values -> [B, N, H, D].

    `mask` [N, M] is True where a query may see a key.
    """
    out = F.scaled_dot_product_attention(
        queries.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2), attn_mask=mask
    )  # [B, H, N, D]
    return out.transpose(1, 2)


def rope_axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Channels of the head given to time, height and width (44/42/42 for a head of 128), as Wan splits them."""
    spatial = 2 * (head_dim // 6)
    return head_dim - 2 * spatial, spatial, spatial


def _axis_angles(positions: torch.Tensor, dims: int, theta: float) -> torch.Tensor:
    """Rotation angles [P, dims/2] for integer positions, in float64 as Wan computes them."""
    inv_freq = 1.0 / theta ** (torch.arange(0, dims, 2, dtype=torch.float64, device=positions.device) / dims)
    return torch.outer(positions.to(torch.float64), inv_freq)


def rope_angles(
    head_dim: int,
    start_frame: int,
    num_frames: int,
    height: int,
    width: int,
    theta: float = 10000.0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Angles [F*H*W, head_dim/2] for a block of tokens whose time position is the absolute frame index.

    Computed where they are used: built on the CPU, every pass would wait for the GPU to finish the
    previous one before copying them over (a pageable host-to-device copy synchronises).
    """
    if device is not None and torch.device(device).type == "mps":
        device = "cpu"  # no float64 there; the caller's RotaryTable moves the result
    dim_t, dim_h, dim_w = rope_axis_dims(head_dim)
    t = _axis_angles(torch.arange(start_frame, start_frame + num_frames, device=device), dim_t, theta)
    h = _axis_angles(torch.arange(height, device=device), dim_h, theta)
    w = _axis_angles(torch.arange(width, device=device), dim_w, theta)
    grid = torch.cat(
        [
            t[:, None, None].expand(num_frames, height, width, -1),
            h[None, :, None].expand(num_frames, height, width, -1),
            w[None, None, :].expand(num_frames, height, width, -1),
        ],
        dim=-1,
    )  # [F, H, W, head_dim/2]
    return grid.reshape(num_frames * height * width, head_dim // 2)


class RotaryTable:
    """cos/sin of the rotation angles of one block, computed once and shared by every layer.

    Stored at the head's full width, each angle twice (once per channel of its pair), with the sine's
    sign folded in for the first channel of each pair, so that rotating is two products and a sum
    with the pair-swapped input. Written this way the compiler reads each input element once and
    writes it once; the textbook form (split into real and imaginary halves, rotate, stack them
    back) compiled at the published size into a kernel several times slower than its traffic.
    """

    def __init__(self, angles: torch.Tensor, device: torch.device) -> None:
        cos = angles.cos().to(device=device, dtype=torch.float32)
        sin = angles.sin().to(device=device, dtype=torch.float32)
        self.cos = cos.repeat_interleave(2, dim=-1)[:, None, :]  # [N, 1, D]: (cos_i, cos_i) per pair
        self.sin = torch.stack((-sin, sin), dim=-1).flatten(-2)[:, None, :]  # [N, 1, D]: (-sin_i, sin_i)

    @classmethod
    def from_tables(cls, cos: torch.Tensor, sin: torch.Tensor) -> RotaryTable:
        """A table of given rows [N, 1, D] (a subset of another's, as a rank of a sequence-parallel group takes)."""
        table = cls.__new__(cls)
        table.cos, table.sin = cos, sin
        return table

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate channel pairs (2i, 2i+1) of x [B, N, H, D] by their angles; computed in float32, returned
        in x's dtype: (a, b) -> (a cos - b sin, b cos + a sin)."""
        x32 = x.float()
        swapped = x32.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)  # (b, a) for each pair (a, b)
        return (x32 * self.cos + swapped * self.sin).type_as(x)
