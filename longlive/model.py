"""The Wan2.1 DiT made block-causal: the network alone.

Tensors, per-frame timesteps, a text cross-attention cache and a KV cache in; the flow prediction
out. Parameter names are the original Wan layout (`blocks.N.self_attn.q`, `ffn.0`, `modulation`,
`head.head`, ...), so published checkpoints load without renaming. Differences from Wan's
bidirectional model: one timestep per latent frame (per-frame modulation), RoPE whose time position
is the frame's absolute index (or its position in the attention window, when the cache says so:
`use_infinite_attention`), and self-attention through `KVCache`.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from longlive.attention import FramePositions, RotaryTable, WindowRotary, attention, rope_angles, window_attention
from longlive.kv_cache import CrossAttentionCache, KVCache, LayerKV
from longlive.presets import WanArchitecture


class TokenExchange(Protocol):
    """How a pass is split over ranks (`longlive.parallel.Ulysses`): the model only calls these."""

    def local_rope(self, rope: RotaryTable | WindowRotary) -> RotaryTable | WindowRotary: ...
    def split_tokens(self, x: torch.Tensor) -> torch.Tensor: ...
    def gather_tokens(self, x: torch.Tensor) -> torch.Tensor: ...
    def to_heads(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]: ...
    def to_tokens(self, x: torch.Tensor) -> torch.Tensor: ...


def sinusoidal_embedding(dim: int, timesteps: torch.Tensor) -> torch.Tensor:
    """Wan's timestep embedding [N, dim] (cos half, then sin half), computed in float64."""
    half = dim // 2
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=timesteps.device) / half)
    angles = torch.outer(timesteps.to(torch.float64), freqs)
    return torch.cat([angles.cos(), angles.sin()], dim=1)


class RMSNorm(nn.Module):
    """RMS norm over the last dim, in float32, then scaled (Wan's q/k norm)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).type_as(x) * self.weight


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the weights' dtype; returns float32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps)


class SelfAttention(nn.Module):
    """Self-attention with RMS-normed q/k and RoPE, through the KV cache when one is given.

    With `sequence_parallel` set (from outside, `longlive.parallel.apply`), x holds this rank's tokens
    and attention runs on this rank's heads of every token, exchanged before and after.
    """

    def __init__(self, dim: int, num_heads: int, eps: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q, self.norm_k = RMSNorm(dim, eps), RMSNorm(dim, eps)
        self.sequence_parallel: TokenExchange | None = None

    def forward(
        self,
        x: torch.Tensor,
        rope: RotaryTable | WindowRotary,
        kv_cache: LayerKV | None,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """x [B, N, C] -> [B, N, C]; with a cache the block's K/V are stored and all visible K/V attended.

        Absolute RoPE (`RotaryTable`) rotates the keys before they are stored; window-relative RoPE
        (`WindowRotary`) stores them unrotated and rotates the visible ones on every pass.
        """
        heads = (self.num_heads, -1)
        window = isinstance(rope, WindowRotary)
        queries = (rope.queries if window else rope).apply(self.norm_q(self.q(x)).unflatten(-1, heads))  # [B, N, H, D]
        keys = self.norm_k(self.k(x)).unflatten(-1, heads)
        if not window:
            keys = rope.apply(keys)
        values = self.v(x).unflatten(-1, heads)
        exchange = self.sequence_parallel
        if exchange is not None:
            queries, keys, values = exchange.to_heads(queries, keys, values)  # each [B, all N, H/ranks, D]
        if kv_cache is not None:
            keys, values = kv_cache.write(keys, values)  # [B, M, H, D]
            mask = kv_cache.mask  # [N, M] when the pass covers several blocks, else None
        # With sequence parallelism the keys' tables (window) span all tokens, as the keys do after the exchange.
        out = window_attention(queries, keys, values, rope, mask) if window else attention(queries, keys, values, mask)
        if exchange is not None:
            out = exchange.to_tokens(out)  # [B, this rank's N, H, D]
        return self.o(out.flatten(2))


class CrossAttention(nn.Module):
    """Attention from video tokens to the text tokens of one prompt."""

    def __init__(self, dim: int, num_heads: int, eps: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q, self.norm_k = RMSNorm(dim, eps), RMSNorm(dim, eps)

    def project_context(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Text tokens [B, L, C] -> keys, values [B, L, H, D]; done once per prompt."""
        heads = (self.num_heads, -1)
        return self.norm_k(self.k(context)).unflatten(-1, heads), self.v(context).unflatten(-1, heads)

    def forward(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        queries = self.norm_q(self.q(x)).unflatten(-1, (self.num_heads, -1))  # [B, N, H, D]
        return self.o(attention(queries, keys, values).flatten(2))


class WanBlock(nn.Module):
    """One transformer block: modulated self-attention, cross-attention, modulated FFN."""

    def __init__(self, arch: WanArchitecture) -> None:
        super().__init__()
        dim = arch.dim
        self.norm1 = LayerNorm(dim, arch.eps, elementwise_affine=False)
        self.self_attn = SelfAttention(dim, arch.num_heads, arch.eps)
        self.norm3 = LayerNorm(dim, arch.eps, elementwise_affine=True)
        self.cross_attn = CrossAttention(dim, arch.num_heads, arch.eps)
        self.norm2 = LayerNorm(dim, arch.eps, elementwise_affine=False)
        self.ffn = nn.Sequential(
            nn.Linear(dim, arch.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(arch.ffn_dim, dim)
        )
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def forward(
        self,
        x: torch.Tensor,
        time: torch.Tensor,
        rope: RotaryTable | WindowRotary,
        text_keys: torch.Tensor,
        text_values: torch.Tensor,
        kv_cache: LayerKV | None,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """x [B, F, T, C] float32 residual stream; time [B, F, 6, C] per-frame modulation."""
        shift_sa, scale_sa, gate_sa, shift_ff, scale_ff, gate_ff = (
            (self.modulation.float().unsqueeze(1) + time).unsqueeze(3).unbind(2)
        )  # each [B, F, 1, C]
        dtype = self.ffn[0].bias.dtype  # the linears compute in it (a float8 layer keeps its bias in it too)

        h = (self.norm1(x) * (1 + scale_sa) + shift_sa).to(dtype).flatten(1, 2)  # [B, F*T, C]
        h = self.self_attn(h, rope, kv_cache, mask)
        x = x + h.unflatten(1, x.shape[1:3]).float() * gate_sa

        h = self.norm3(x).to(dtype)  # [B, F, T, C]
        # Per-frame text (training a prompt switch, `CrossAttentionCache`): keys [B*F, L, H, D], and each
        # frame's tokens attend to their own frame's prompt; otherwise all B*F*T tokens share one prompt.
        per_frame = text_keys.shape[0] != x.shape[0] and text_keys.shape[0] == x.shape[0] * x.shape[1]
        h = h.flatten(0, 1) if per_frame else h.flatten(1, 2)  # [B*F, T, C] or [B, F*T, C]
        x = x + self.cross_attn(h, text_keys, text_values).view(x.shape).float()

        h = (self.norm2(x) * (1 + scale_ff) + shift_ff).to(dtype)
        return x + self.ffn(h).float() * gate_ff


class Head(nn.Module):
    """Final modulated norm and projection to patch pixels."""

    def __init__(self, arch: WanArchitecture) -> None:
        super().__init__()
        self.norm = LayerNorm(arch.dim, arch.eps, elementwise_affine=False)
        self.head = nn.Linear(arch.dim, math.prod(arch.patch_size) * arch.out_channels)
        self.modulation = nn.Parameter(torch.randn(1, 2, arch.dim) / arch.dim**0.5)

    def forward(self, x: torch.Tensor, time_embedding: torch.Tensor) -> torch.Tensor:
        """x [B, F, T, C], time_embedding [B, F, C] -> [B, F, T, prod(patch)*out]."""
        shift, scale = (self.modulation.float().unsqueeze(1) + time_embedding.unsqueeze(2)).unsqueeze(3).unbind(2)
        return self.head((self.norm(x) * (1 + scale) + shift).to(self.head.weight.dtype))


class CausalWanModel(nn.Module):
    """Wan2.1 text-to-video DiT, block-causal (see module docstring)."""

    def __init__(self, arch: WanArchitecture) -> None:
        super().__init__()
        self.arch = arch
        dim = arch.dim
        self.patch_embedding = nn.Conv3d(arch.in_channels, dim, kernel_size=arch.patch_size, stride=arch.patch_size)
        self.text_embedding = nn.Sequential(
            nn.Linear(arch.text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim)
        )
        self.time_embedding = nn.Sequential(nn.Linear(arch.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim * 6))
        self.blocks = nn.ModuleList(WanBlock(arch) for _ in range(arch.num_layers))
        self.head = Head(arch)
        self.sequence_parallel: TokenExchange | None = None  # set from outside (`longlive.parallel.apply`)

    @property
    def dtype(self) -> torch.dtype:
        return self.head.head.weight.dtype

    def prepare_text(self, text_embeddings: torch.Tensor) -> CrossAttentionCache:
        """Text-encoder output [B, text_len, text_dim] -> every layer's cross-attention K/V, once per prompt."""
        context = self.text_embedding(text_embeddings.to(self.dtype))  # [B, L, C]
        keys, values = zip(*(block.cross_attn.project_context(context) for block in self.blocks), strict=True)
        return CrossAttentionCache(keys=list(keys), values=list(values))

    def forward(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        text: CrossAttentionCache,
        kv_cache: KVCache | None = None,
        start_frame: int = 0,
        frame_mask: torch.Tensor | None = None,
        block_sizes: list[int] | None = None,
        frame_positions: FramePositions | None = None,
    ) -> torch.Tensor:
        """Predict the flow of a block of latent frames.

        latents [B, F, C, H, W]; timesteps [B, F] (one per frame, in [0, 1000]); `text` from
        `prepare_text`. With `kv_cache`, the block holds frames [start_frame, start_frame+F) and
        attends to what the cache keeps (at the RoPE positions the cache gives, if it gives any);
        without it, attention spans these F frames, limited by `frame_mask` [F, F] (True where a query
        frame may see a key frame), at absolute positions or at `frame_positions` (keys in frame order).
        `block_sizes` splits a cached pass into blocks that stay causal among themselves (a `window` recache).
        Returns [B, F, C, H, W].
        """
        grid = self.token_grid(latents.shape)
        mask = None if frame_mask is None else self._token_mask(frame_mask, grid[1] * grid[2], latents.device)
        layers = [None] * len(self.blocks)
        if kv_cache is not None:
            kv_cache.begin_block(start_frame, latents.shape[1], block_sizes)
            layers = kv_cache.layers()
            frame_positions = kv_cache.frame_positions
        rope = self.rotary_table(latents.shape, start_frame, latents.device, frame_positions)
        if self.sequence_parallel is not None:
            rope = self.sequence_parallel.local_rope(rope)  # the queries' rows of this rank's tokens
        return self.run_blocks(latents, timesteps, text, rope, layers, mask)

    def token_grid(self, latent_shape: torch.Size) -> tuple[int, int, int]:
        """Tokens along time, height and width for latents of `latent_shape` [B, F, C, H, W]."""
        pt, ph, pw = self.arch.patch_size
        return latent_shape[1] // pt, latent_shape[3] // ph, latent_shape[4] // pw

    def rotary_table(
        self,
        latent_shape: torch.Size,
        start_frame: int,
        device: torch.device,
        frame_positions: FramePositions | None = None,
    ) -> RotaryTable | WindowRotary:
        """RoPE of a block starting at absolute frame `start_frame`, or at `frame_positions`, computed on `device`."""
        grid = self.token_grid(latent_shape)
        if frame_positions is not None:
            return WindowRotary.build(frame_positions, self.arch.head_dim, grid[1], grid[2], device)
        return RotaryTable(rope_angles(self.arch.head_dim, start_frame, *grid, device=device), device)

    def run_blocks(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        text: CrossAttentionCache,
        rope: RotaryTable | WindowRotary,
        layers: list[LayerKV | None],
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The device work of `forward` (no bookkeeping, no host transfers), so it can be graph-captured.

        `rope` holds the rows of the tokens this process computes (all of them without sequence parallelism).
        """
        batch, frames = latents.shape[:2]
        tokens = self.patch_embedding(latents.transpose(1, 2).to(self.dtype))  # [B, C, F, H/ph, W/pw]
        grid = tokens.shape[2:]
        x = tokens.flatten(3).permute(0, 2, 3, 1).float()  # [B, F, T, C]
        if self.sequence_parallel is not None:
            x = self.sequence_parallel.split_tokens(x)  # [B, F, T/ranks, C]: this rank's tokens of each frame

        time_embedding = self.time_embedding(
            sinusoidal_embedding(self.arch.freq_dim, timesteps.flatten()).to(self.dtype)
        ).float()  # [B*F, C]
        time = self.time_projection(time_embedding.to(self.dtype)).float().unflatten(1, (6, -1))  # [B*F, 6, C]
        time, time_embedding = time.unflatten(0, (batch, frames)), time_embedding.unflatten(0, (batch, frames))

        for layer, block in enumerate(self.blocks):
            x = block(x, time, rope, text.keys[layer], text.values[layer], layers[layer], mask)

        out = self.head(x, time_embedding)  # [B, F, T, pt*ph*pw*C]
        if self.sequence_parallel is not None:
            out = self.sequence_parallel.gather_tokens(out)  # every rank's tokens, on every rank
        return self._unpatchify(out, grid).float()

    def _unpatchify(self, x: torch.Tensor, grid: torch.Size) -> torch.Tensor:
        """[B, F, h*w, pt*ph*pw*C] -> [B, F*pt, C, h*ph, w*pw]."""
        pt, ph, pw = self.arch.patch_size
        f, h, w = grid
        x = x.reshape(x.shape[0], f, h, w, pt, ph, pw, self.arch.out_channels)
        x = torch.einsum("bfhwpqrc->bfpchqwr", x)
        return x.reshape(x.shape[0], f * pt, self.arch.out_channels, h * ph, w * pw)

    @staticmethod
    def _token_mask(frame_mask: torch.Tensor, frame_tokens: int, device: torch.device) -> torch.Tensor:
        return frame_mask.repeat_interleave(frame_tokens, 0).repeat_interleave(frame_tokens, 1).to(device)


def init_random_weights(model: CausalWanModel, generator: torch.Generator | None = None) -> None:
    """Random weights for tiny test models and speed runs, scaled so every path carries signal.

    (Wan's own init zeroes the head, which would make an untrained model output exactly zero.) Values are
    drawn in float32 whatever the parameters' dtype, so a model built in bfloat16 gets exactly the weights
    of one initialised in float32 and cast (`random_model` relies on it).
    """
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 1 and "norm" in name:
                param.fill_(1.0)
                continue
            fan_in = param[0].numel() if "modulation" not in name else param.shape[-1]
            std = 0.02 if param.ndim == 1 else fan_in**-0.5
            if param.dtype == torch.float32:
                param.normal_(0.0, std, generator=generator)
            else:  # one parameter at a time in float32: a few MB, never a float32 copy of the model
                draw = torch.empty(param.shape, device=param.device).normal_(0.0, std, generator=generator)
                param.copy_(draw)


def random_model(arch: WanArchitecture, device: torch.device, dtype: torch.dtype, seed: int) -> CausalWanModel:
    """A generator with `init_random_weights` (seeded by `seed` alone), built straight on `device` in `dtype`.

    Built on the meta device, then given storage and initialised once: the PyTorch layers' own init, which
    `init_random_weights` overwrites anyway, never runs, and no float32 copy of the model exists. It equals
    building in float32, `init_random_weights` with a generator seeded by `seed`, and casting (the
    reference, in the tests). At the published size this took 23 s on one CPU core before (BENCHMARKS.md).
    """
    with torch.device("meta"):
        model = CausalWanModel(arch)
    model = model.to(dtype=dtype).to_empty(device=device)
    left = _tensors_without_values(model)
    if left:  # only parameters get values below: anything else would be garbage or meta, a bug of the model
        raise RuntimeError(f"random_model: tensors init_random_weights gives no values: {', '.join(left)}")
    init_random_weights(model, torch.Generator(device).manual_seed(seed))
    return model


def _tensors_without_values(model: nn.Module) -> list[str]:
    """Buffers (`to_empty` gives them storage, not values) and plain tensor attributes (left on the meta
    device): what `init_random_weights`, which sets parameters only, would leave undefined."""
    left = [name for name, _ in model.named_buffers()]
    for prefix, module in model.named_modules():
        left += [f"{prefix}.{key}" for key, v in vars(module).items() if isinstance(v, torch.Tensor) and v.is_meta]
    return left
