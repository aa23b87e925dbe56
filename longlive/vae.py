"""The Wan2.1 VAE (diffusers' `AutoencoderKLWan`) driven as a stream.

diffusers clears the VAE's causal convolution caches on every `encode`/`decode` call, so a video must
be passed whole. Here each direction keeps its own cache list between calls, so frames are encoded as
they arrive and latents decoded block by block as the generator finishes them, with the same result
as one whole-video call. Latents are normalised with the VAE's latents_mean/latents_std, as Wan does.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLWan

from longlive.presets import VAEArchitecture
from longlive.vae_split import RowPlan, RowShare, allow_decoder_recompiles, decode_rows, plan_rows


def build_vae(
    arch: VAEArchitecture, latents_mean: list[float] | None = None, latents_std: list[float] | None = None
) -> AutoencoderKLWan:
    """An `AutoencoderKLWan` of the given shape (random weights; loaders assign published ones).

    `latents_mean`/`latents_std` (z_dim values each) replace the published Wan VAE's latent statistics,
    for a VAE trained here (the demo model's, read from its `config.json`).
    """
    stats = {}
    if latents_mean is not None:
        stats["latents_mean"] = [float(v) for v in latents_mean]
    if latents_std is not None:
        stats["latents_std"] = [float(v) for v in latents_std]
    return AutoencoderKLWan(
        base_dim=arch.base_dim,
        z_dim=arch.z_dim,
        dim_mult=list(arch.dim_mult),
        num_res_blocks=arch.num_res_blocks,
        temperal_downsample=list(arch.temporal_downsample),
        **stats,
    )


def compile_decoder(vae: AutoencoderKLWan) -> None:
    """Compile the decoder in place (its state dict keys stay): inductor fuses the bias adds, the
    concatenations of the causal caches and the norms around each convolution. Shapes are static: a
    stream's calls have only a few shapes (`allow_decoder_recompiles`), and static kernels are the fast
    ones."""
    allow_decoder_recompiles()
    vae.decoder.compile(dynamic=False)


class StreamingVAE:
    """Block-by-block encode and decode through persistent causal caches.

    Frames are [B, 3, N, H, W] in [-1, 1]; latents are [B, F, C, h, w] (frame-major, as the generator
    takes them), normalised. The encoder consumes 1 frame, then groups of `temporal_stride`; frames
    that do not yet complete a group wait for the next call. The decoder turns the first latent frame
    into 1 frame and every later one into `temporal_stride` frames, one latent frame per decoder call.

    With `rows` (`parallel.split_decode`), the decoder makes only that part's rows of each frame
    (`longlive.vae_split`), through its own causal caches: the parts' rows, stacked, are the whole decode.
    """

    def __init__(self, vae: AutoencoderKLWan, rows: RowShare | None = None) -> None:
        self.vae = vae.eval().requires_grad_(False)
        self.rows = rows
        self._row_plans: dict[int, RowPlan] = {}  # per latent height
        self.stride = vae.config.scale_factor_temporal
        z_dim = vae.config.z_dim
        # On the VAE's device, so that `.to(latents.device)` below copies nothing (a host-to-device copy
        # per call would make the host wait for the GPU's queued work).
        self.mean = torch.tensor(vae.config.latents_mean, device=self.device).view(1, 1, z_dim, 1, 1)
        self.std = torch.tensor(vae.config.latents_std, device=self.device).view(1, 1, z_dim, 1, 1)
        self.reset()

    @property
    def device(self) -> torch.device:
        return self.vae.post_quant_conv.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.vae.post_quant_conv.weight.dtype

    def reset(self) -> None:
        """Start a new video in both directions."""
        self.reset_encoder()
        self.reset_decoder()

    def reset_encoder(self) -> None:
        self._encoder_cache: list = [None] * self.vae._cached_conv_counts["encoder"]
        self._encoded_frames = 0
        self._pending: torch.Tensor | None = None

    def split_rows(self, rows: RowShare | None) -> None:
        """Decode only part `rows` of every frame from now on (None: whole frames); starts a new video."""
        self.rows = rows
        self._row_plans = {}
        self.reset_decoder()

    def reset_decoder(self) -> None:
        self._decoder_cache: list = [None] * self.vae._cached_conv_counts["decoder"]
        self._decoded_latents = 0

    # -- encode ------------------------------------------------------------------------------------

    @torch.no_grad()
    def encode(self, frames: torch.Tensor, groups_per_call: int = 1) -> torch.Tensor:
        """Feed video frames [B, 3, N, H, W]; return the latents [B, F, C, h, w] they complete (F may be 0).

        `groups_per_call` > 1 passes up to that many complete groups of `temporal_stride` frames through the
        encoder at once (the first frame still alone): the causal convolutions and the strided temporal
        downsampling give the same latents (up to float rounding) in fewer, larger calls, which is what a
        GPU wants for many frames (one group per call, as diffusers encodes, is launch-bound there)."""
        frames = frames.to(device=self.device, dtype=self.dtype)
        if self._pending is not None:
            frames = torch.cat([self._pending, frames], dim=2)
        latents = []
        while frames.shape[2] >= self._next_group_size():
            size = self._next_group_size()
            if size == self.stride:  # after the first frame: as many whole groups as asked and present
                size *= max(1, min(groups_per_call, frames.shape[2] // self.stride))
            latents.append(self._encode_group(frames[:, :, :size]))
            frames = frames[:, :, size:]
        self._pending = frames if frames.shape[2] else None
        if not latents:
            return frames.new_zeros(frames.shape[0], 0, self.mean.shape[2], *self._latent_hw(frames))
        return torch.cat(latents, dim=1)

    def _next_group_size(self) -> int:
        return 1 if self._encoded_frames == 0 else self.stride

    def _encode_group(self, frames: torch.Tensor) -> torch.Tensor:
        hidden = self.vae.encoder(frames, feat_cache=self._encoder_cache, feat_idx=[0])
        moments = self.vae.quant_conv(hidden)  # [B, 2C, f, h, w]
        mean = moments[:, : moments.shape[1] // 2]  # the posterior's mode, as Wan encodes
        self._encoded_frames += frames.shape[2]
        return self.normalize(mean.transpose(1, 2))

    def _latent_hw(self, frames: torch.Tensor) -> tuple[int, int]:
        scale = self.vae.config.scale_factor_spatial
        return frames.shape[-2] // scale, frames.shape[-1] // scale

    # -- decode ------------------------------------------------------------------------------------

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, latents_per_call: int = 1) -> torch.Tensor:
        """Decode the next latents [B, F, C, h, w] -> frames [B, 3, N, H, W] in [-1, 1] (with `rows`, only
        that part's rows of H: `row_plan(h).output`).

        One latent frame per decoder call, as diffusers decodes: the activations of a call are those of 4
        output frames whatever the block size. `latents_per_call` > 1 (whole frames only) passes up to that
        many through the decoder at once after the video's first (which must be alone: it makes 1 frame):
        the same frames up to float rounding in fewer, larger calls, for a GPU decoding many latent frames
        of a large batch (one per call is launch-bound there)."""
        if latents_per_call > 1 and self.rows is not None:
            raise ValueError(f"latents_per_call={latents_per_call}: a row-split decoder takes one latent frame a call")
        latents = self.denormalize(latents.to(device=self.device, dtype=torch.float32)).to(self.dtype)
        latents = latents.transpose(1, 2)  # [B, C, F, h, w]
        pieces, start = [], 0
        while start < latents.shape[2]:
            end = start + (1 if self._decoded_latents == 0 else latents_per_call)
            pieces.append(self._decode_piece(latents[:, :, start:end]))
            start = end
        return torch.cat(pieces, dim=2)

    def _decode_piece(self, latents: torch.Tensor) -> torch.Tensor:
        hidden = self.vae.post_quant_conv(latents)
        first = self._decoded_latents == 0
        if self.rows is None:
            frames = self.vae.decoder(hidden, feat_cache=self._decoder_cache, feat_idx=[0], first_chunk=first)
        else:
            plan = self.row_plan(hidden.shape[-2])
            frames = decode_rows(self.vae.decoder, hidden, self._decoder_cache, plan, first)
        self._decoded_latents += latents.shape[2]
        return frames.clamp(-1, 1)

    def row_plan(self, latent_height: int) -> RowPlan:
        """This part's slabs through the decoder for latent frames `latent_height` rows high."""
        if latent_height not in self._row_plans:
            self._row_plans[latent_height] = plan_rows(self.vae.decoder, latent_height, self.rows)
        return self._row_plans[latent_height]

    # -- normalisation -----------------------------------------------------------------------------

    def normalize(self, latents: torch.Tensor) -> torch.Tensor:
        """Raw VAE means [B, F, C, h, w] -> the generator's latent space."""
        return (latents.float() - self.mean.to(latents.device)) / self.std.to(latents.device)

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        return latents.float() * self.std.to(latents.device) + self.mean.to(latents.device)
