"""Video-conditional block-causal rollout: the loop, written as a numbered recipe.

    1. check the inputs            5. feed the conditioning blocks at `context_noise` under prompt 1
    2. encode the prompts          6. switch the cross-attention cache to prompt 2
    3. encode the conditioning     7. denoise each new block, write it to the KV cache at `context_noise`
    4. plan blocks, reset caches   8. decode each finished block and hand it back

Text-to-video is the same rollout with no conditioning frames, image-to-video with one. The pipeline
owns the loop and the devices; the model is a network, the caches keep their own bookkeeping, and the
sampler holds the step formulas.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from longlive.components import build_generator, build_prompt_encoder, build_streaming_vae
from longlive.config import ConfigError, Geometry, derive_geometry
from longlive.kv_cache import CrossAttentionCache, KVCache
from longlive.model import CausalWanModel
from longlive.runner import CUDAGraphGenerator
from longlive.sampler import FlowMatchSampler
from longlive.text_encoder import PromptSource
from longlive.vae import StreamingVAE

logger = logging.getLogger(__name__)


class InputError(ValueError):
    """A caller's prompt or video is unusable; the message names it."""


@dataclass(frozen=True)
class Block:
    """A run of latent frames [start, start + size) processed in one generator pass."""

    index: int
    start: int
    size: int
    conditioning: bool

    @property
    def end(self) -> int:
        return self.start + self.size


def plan_blocks(num_conditioning: int, num_output: int, frames_per_block: int) -> list[Block]:
    """Split the conditioning latents, then the frames to generate, into blocks of `frames_per_block`.

    Each part ends with a shorter block when it is not a multiple, so the output is filled exactly.
    """
    blocks: list[Block] = []
    for conditioning, start, end in ((True, 0, num_conditioning), (False, num_conditioning, num_output)):
        for block_start in range(start, end, frames_per_block):
            size = min(frames_per_block, end - block_start)
            blocks.append(Block(len(blocks), block_start, size, conditioning))
    return blocks


@dataclass
class BlockResult:
    """One finished block: latents [B, F, C, h, w] and, when decoded, video frames [B, 3, N, H, W] in [-1, 1]."""

    block: Block
    latents: torch.Tensor
    frames: torch.Tensor | None


@dataclass
class VideoResult:
    latents: torch.Tensor  # [B, T, C, h, w]
    frames: torch.Tensor | None  # [B, 3, 4T-3, H, W] in [-1, 1]
    num_conditioning_video_frames: int  # video frames the VAE consumed from the input


class VideoConditionalPipeline:
    """Conditions on a video under one prompt, then rolls out new blocks under another."""

    def __init__(
        self,
        cfg: DictConfig,
        generator: CausalWanModel,
        vae: StreamingVAE,
        prompts: PromptSource,
        device: torch.device | str,
    ) -> None:
        self.cfg = cfg
        self.geometry: Geometry = derive_geometry(cfg)
        self.generator = generator.eval().requires_grad_(False)
        self.vae = vae
        self.prompts = prompts
        self.device = torch.device(device)
        self.sampler = FlowMatchSampler(
            cfg.denoising_step_list, cfg.model_kwargs.timestep_shift, cfg.warp_denoising_step
        )
        self.kv_cache: KVCache | None = None
        if cfg.compile_generator:
            compile_blocks(self.generator)
        self._step = self.generator
        if cfg.cuda_graphs:
            if self.device.type != "cuda":
                raise ConfigError(f"cuda_graphs=true needs a CUDA device, not {self.device}")
            self._step = CUDAGraphGenerator(self.generator)

    @classmethod
    def from_config(
        cls, cfg: DictConfig, device: torch.device | str | None = None, prompts: PromptSource | None = None
    ) -> VideoConditionalPipeline:
        """Build every component the config names, on `device` (see `longlive.components`).

        `prompts` replaces the text encoder (benchmarks exclude it; tests record prompts).
        """
        device = torch.device(device or resolve_device(cfg.device))
        generator = build_generator(cfg, device)
        vae = build_streaming_vae(cfg, device)
        # Low-VRAM mode: the text encoder (UMT5-XXL, 11 GB in bf16) stays on the CPU; only the
        # embeddings move to the device.
        low_vram = resolve_low_vram(cfg.low_vram, device)
        if prompts is None:
            prompts = build_prompt_encoder(cfg, torch.device("cpu") if low_vram else device)
        return cls(cfg, generator, vae, prompts, device)

    # -- the recipe --------------------------------------------------------------------------------

    @torch.no_grad()
    def stream(
        self,
        prompt1: str,
        prompt2: str | None = None,
        video: torch.Tensor | None = None,
        seed: int = 0,
        decode: bool = True,
    ) -> Iterator[BlockResult]:
        """Yield each block as it finishes, conditioning blocks first.

        `video` [B, 3, N, H, W] in [-1, 1] at the model resolution; its first
        `num_conditioning_frames` frames condition the rollout (the VAE takes the largest 4k+1 of them).
        `prompt2` defaults to `prompt1`. Noise comes from a generator seeded with `seed` alone, so a
        sample's output does not depend on where or with what else it runs.
        """
        video = self._check_inputs(prompt1, prompt2, video)  # 1
        text1, text2 = self._encode_prompts(prompt1, prompt2 if prompt2 is not None else prompt1)  # 2
        conditioning = self._encode_conditioning(video)  # 3
        blocks = plan_blocks(conditioning.shape[1], self.cfg.num_output_frames, self.geometry.frames_per_block)
        self._reset_caches(batch_size=conditioning.shape[0])  # 4
        rng = torch.Generator(self.device).manual_seed(seed)

        for block in blocks:
            if block.conditioning:
                latents = conditioning[:, block.start : block.end]
                self._write_context(latents, block, text1, rng)  # 5
            else:
                latents = self._denoise_block(block, text2, rng)  # 6, 7: prompt 2 from here on
                self._write_context(latents, block, text2, rng)
            frames = self.vae.decode(latents) if decode else None  # 8
            yield BlockResult(block, latents, frames)

    def __call__(
        self,
        prompt1: str,
        prompt2: str | None = None,
        video: torch.Tensor | None = None,
        seed: int = 0,
        decode: bool = True,
    ) -> VideoResult:
        """Run `stream` to the end and gather its blocks on the CPU (so GPU memory stays flat)."""
        latents, frames = [], []
        for result in self.stream(prompt1, prompt2, video, seed, decode):
            latents.append(result.latents.float().cpu())
            if decode:
                frames.append(result.frames.float().cpu())
        return VideoResult(
            torch.cat(latents, dim=1),
            torch.cat(frames, dim=2) if decode else None,
            self.conditioning_video_frames(video),
        )

    # -- the steps ---------------------------------------------------------------------------------

    def conditioning_video_frames(self, video: torch.Tensor | None) -> int:
        """Video frames the VAE consumes: the largest 4k+1 within `num_conditioning_frames` and the video."""
        if video is None:
            return 0
        available = min(self.cfg.num_conditioning_frames, video.shape[2])
        latents = self.geometry.latents_for_video_frames(available)
        return self.geometry.video_frames_for_latents(latents)

    def _check_inputs(self, prompt1: str, prompt2: str | None, video: torch.Tensor | None) -> torch.Tensor | None:
        for name, prompt in (("prompt1", prompt1), ("prompt2", prompt2)):
            if prompt is not None and not prompt.strip():
                raise InputError(f"{name} is empty")
        if video is None or self.cfg.num_conditioning_frames == 0:
            return None
        expected = (self.cfg.height, self.cfg.width)
        if video.ndim != 5 or video.shape[1] != 3 or tuple(video.shape[-2:]) != expected:
            raise InputError(f"video must be [B, 3, N, {expected[0]}, {expected[1]}], got {list(video.shape)}")
        if video.shape[2] < self.cfg.num_conditioning_frames:
            raise InputError(
                f"video has {video.shape[2]} frames, fewer than "
                f"num_conditioning_frames={self.cfg.num_conditioning_frames}"
            )
        return video

    def _encode_prompts(self, prompt1: str, prompt2: str) -> tuple[CrossAttentionCache, CrossAttentionCache]:
        def embed(prompt: str) -> torch.Tensor:  # the encoder may live on the CPU (low-VRAM mode)
            return self.prompts.encode(prompt).to(self.device)

        return self.generator.prepare_text(embed(prompt1)), self.generator.prepare_text(embed(prompt2))

    def _encode_conditioning(self, video: torch.Tensor | None) -> torch.Tensor:
        """Conditioning latents [B, F, C, h, w] (F = 0 without a video)."""
        g = self.geometry
        if video is None:
            return torch.zeros(1, 0, g.latent_channels, g.latent_height, g.latent_width, device=self.device)
        used = self.conditioning_video_frames(video)
        logger.info(
            "conditioning on %d of %d requested video frames -> %d latent frames",
            used,
            self.cfg.num_conditioning_frames,
            g.latents_for_video_frames(used),
        )
        self.vae.reset_encoder()
        return self.vae.encode(video[:, :, :used]).to(self.device)

    def _reset_caches(self, batch_size: int) -> None:
        g = self.geometry
        if self.kv_cache is None or self.kv_cache.keys.shape[1] != batch_size:
            self.kv_cache = KVCache(
                num_layers=g.num_layers,
                batch_size=batch_size,
                frame_tokens=g.frame_tokens,
                cache_frames=g.cache_frames,
                sink_frames=g.sink_frames,
                num_heads=g.num_heads,
                head_dim=g.head_dim,
                dtype=self.generator.dtype,
                device=self.device,
            )
        self.kv_cache.reset()
        self.vae.reset_decoder()

    def _run_generator(
        self, latents: torch.Tensor, timestep: float, block: Block, text: CrossAttentionCache
    ) -> torch.Tensor:
        timesteps = torch.full(latents.shape[:2], timestep, device=self.device)
        return self._step(latents, timesteps, text, self.kv_cache, start_frame=block.start)

    def _noise_like(self, block: Block, batch_size: int, rng: torch.Generator) -> torch.Tensor:
        g = self.geometry
        shape = (batch_size, block.size, g.latent_channels, g.latent_height, g.latent_width)
        return torch.randn(shape, generator=rng, device=self.device)

    def _denoise_block(self, block: Block, text: CrossAttentionCache, rng: torch.Generator) -> torch.Tensor:
        """Few-step sampling of one block from pure noise; returns its clean latents [B, F, C, h, w]."""
        batch_size = self.kv_cache.keys.shape[1]
        noisy = self._noise_like(block, batch_size, rng)
        timesteps = self.sampler.timesteps
        for step, timestep in enumerate(timesteps):
            flow = self._run_generator(noisy, timestep, block, text)
            clean = self.sampler.predict_clean(noisy, flow, timestep)
            if step + 1 < len(timesteps):
                noisy = self.sampler.add_noise(clean, self._noise_like(block, batch_size, rng), timesteps[step + 1])
        return clean

    def _write_context(
        self, latents: torch.Tensor, block: Block, text: CrossAttentionCache, rng: torch.Generator
    ) -> None:
        """Run finished (or conditioning) latents once at `context_noise` so their K/V enter the cache."""
        context_noise = float(self.cfg.context_noise)
        if context_noise > 0:
            latents = self.sampler.add_noise(latents, self._noise_like(block, latents.shape[0], rng), context_noise)
        self._run_generator(latents, context_noise, block, text)


def resolve_device(name: str) -> str:
    """`auto` picks CUDA when available."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def compile_blocks(generator: CausalWanModel) -> None:
    """torch.compile each transformer block in place, from outside the model.

    All blocks share one compiled graph per shape: they take the same tensors and a `LayerKV` view
    (no layer number), so only the visible cache length makes new graphs.
    """
    for block in generator.blocks:
        block.compile()


LOW_VRAM_FREE_BYTES = 40 * 1024**3  # LongLive's threshold: under 40 GiB free, the text encoder stays off the GPU


def free_gpu_memory(device: torch.device) -> int:
    """Free bytes on a CUDA device (the probe the automatic low-VRAM mode reads)."""
    return torch.cuda.mem_get_info(device)[0]


def resolve_low_vram(setting: bool | None, device: torch.device | str) -> bool:
    """`low_vram`: true or false as set; null = on when a CUDA device has under 40 GiB free (off on CPU)."""
    device = torch.device(device)
    if setting is not None:
        logger.info("low-VRAM mode: %s (low_vram=%s)", "on" if setting else "off", str(setting).lower())
        return bool(setting)
    if device.type != "cuda":
        logger.info("low-VRAM mode: off (no GPU)")
        return False
    free = free_gpu_memory(device)
    low_vram = free < LOW_VRAM_FREE_BYTES
    logger.info(
        "low-VRAM mode: %s (%.1f GiB free on %s, threshold %.0f GiB; set low_vram to force)",
        "on" if low_vram else "off",
        free / 1024**3,
        device,
        LOW_VRAM_FREE_BYTES / 1024**3,
    )
    return low_vram
