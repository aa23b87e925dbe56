"""Attention kernels and Wan's 3D rotary position embedding.

Kept apart from the network so a faster kernel (a backend, a compiled variant) is a change here
with the plain SDPA path as its reference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

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
    """Angles [F*H*W, head_dim/2] for a block of tokens whose time position is the absolute frame index."""
    positions = torch.arange(start_frame, start_frame + num_frames, device=device)
    return rope_angles_at(head_dim, positions, height, width, theta)


def rope_angles_at(
    head_dim: int, frame_positions: torch.Tensor, height: int, width: int, theta: float = 10000.0
) -> torch.Tensor:
    """Angles [F*H*W, head_dim/2] for F frames whose time positions are `frame_positions` [F] (any order).

    Computed where they are used: built on the CPU, every pass would wait for the GPU to finish the
    previous one before copying them over (a pageable host-to-device copy synchronises).
    """
    if frame_positions.device.type == "mps":
        frame_positions = frame_positions.cpu()  # no float64 there; the caller's RotaryTable moves the result
    device, num_frames = frame_positions.device, frame_positions.numel()
    dim_t, dim_h, dim_w = rope_axis_dims(head_dim)
    t = _axis_angles(frame_positions, dim_t, theta)
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


def device_ints(values: Sequence[int], device: torch.device | str | None) -> torch.Tensor:
    """`values` as an int64 tensor made on `device` from its runs of consecutive integers (one arange each).

    A ring's positions are a few such runs; built this way they need no host-to-device copy, which
    would make the pass wait for the previous one.
    """
    runs, start = [], 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[i - 1] + 1:
            runs.append(torch.arange(values[start], values[i - 1] + 1, device=device))
            start = i
    return torch.cat(runs) if len(runs) > 1 else runs[0]


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

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate channel pairs (2i, 2i+1) of x [B, N, H, D] by their angles; computed in float32, returned
        in x's dtype: (a, b) -> (a cos - b sin, b cos + a sin)."""
        x32 = x.float()
        swapped = x32.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)  # (b, a) for each pair (a, b)
        return (x32 * self.cos + swapped * self.sin).type_as(x)

    def copy_(self, other: RotaryTable) -> None:
        """Take `other`'s angles into these buffers (a CUDA graph reads them in place)."""
        self.cos.copy_(other.cos)
        self.sin.copy_(other.sin)


# ----------------------------------------------------------------------------------------------
# Window-relative RoPE (`model_kwargs.use_infinite_attention`, LongLive's Infinity-RoPE mode).
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FramePositions:
    """Time positions of one pass under window-relative RoPE, per latent frame.

    The pass's query frames are cut into groups (the blocks of the pass; one for an ordinary block);
    every query frame of a group sees the keys at `keys[group]` (one position per key frame, in the
    keys' order) and sits itself at `queries[frame]`. Keys enter attention unrotated and are rotated
    per group, since one frame's position depends on the block that looks at it.
    """

    queries: list[int]
    keys: list[list[int]]
    group_sizes: list[int]


class WindowRotary:
    """The RoPE tables of one pass under window-relative positions: one for the queries, one per group."""

    def __init__(self, queries: RotaryTable, keys: list[RotaryTable], group_tokens: list[int]) -> None:
        self.queries = queries
        self.keys = keys
        self.group_tokens = group_tokens  # query tokens per group

    @classmethod
    def build(
        cls, positions: FramePositions, head_dim: int, height: int, width: int, device: torch.device
    ) -> WindowRotary:
        """Tables for `positions` on a token grid of height x width per frame, computed on `device`."""

        def table(frames: Sequence[int]) -> RotaryTable:
            return RotaryTable(rope_angles_at(head_dim, device_ints(frames, device), height, width), device)

        tokens = height * width
        return cls(
            table(positions.queries),
            [table(keys) for keys in positions.keys],
            [size * tokens for size in positions.group_sizes],
        )

    def copy_(self, other: WindowRotary) -> None:
        """Take `other`'s tables into these buffers (same groups and sizes; a CUDA graph reads them in place)."""
        for mine, theirs in zip([self.queries, *self.keys], [other.queries, *other.keys], strict=True):
            mine.copy_(theirs)


def window_attention(
    queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, rope: WindowRotary, mask: torch.Tensor | None
) -> torch.Tensor:
    """Attention of rotated queries [B, N, H, D] over unrotated keys [B, M, H, D], rotated per query group.

    `mask` [N, M] as in `attention`. With one group (an ordinary block) this is one rotation of the
    visible keys and one attention call.
    """
    outputs, start = [], 0
    for table, size in zip(rope.keys, rope.group_tokens, strict=True):
        rows = slice(start, start + size)
        outputs.append(attention(queries[:, rows], table.apply(keys), values, None if mask is None else mask[rows]))
        start += size
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)


# The RoPE positions Wan2.1 and LongLive v1.0 cover: LongLive's table has 1024 time positions (indexing
# past it fails there), and its long tuning streamed videos of at most 240 latent frames
# (`streaming_max_length` in configs/longlive_train_long.yaml).
ROPE_TABLE_FRAMES = 1024
TRAINED_FRAMES = 240


def rope_range_warning(num_frames: float, infinite_attention: bool, cache_frames: int) -> str | None:
    """Why a rollout of `num_frames` latent frames leaves the trained RoPE positions, or None if it does not.

    Absolute RoPE gives frame f the time position f; window-relative RoPE never goes past the cache's
    `cache_frames` (the whole video under global attention, which makes both the same).
    """
    largest = min(num_frames, cache_frames) if infinite_attention else num_frames
    if largest <= TRAINED_FRAMES:
        return None
    count = "an endless rollout's" if math.isinf(num_frames) else f"{num_frames}"
    past_table = (
        f" and the {ROPE_TABLE_FRAMES} of its RoPE table (LongLive v1.0 stops there)"
        if largest > ROPE_TABLE_FRAMES
        else ""
    )
    if infinite_attention:
        return (
            f"{count} latent frames in a cache of {cache_frames} (local_attn_size=-1 holds the whole video) "
            f"put RoPE time positions past the {TRAINED_FRAMES} LongLive was trained on{past_table}; they "
            "extrapolate. Set a local window (model_kwargs.local_attn_size), which keeps "
            "model_kwargs.use_infinite_attention's positions inside it"
        )
    return (
        f"{count} latent frames put absolute RoPE time positions past the {TRAINED_FRAMES} LongLive was "
        f"trained on{past_table}: the distance from each block to the sink frames extrapolates. Set "
        "model_kwargs.use_infinite_attention=true (window-relative RoPE) for videos this long"
    )
