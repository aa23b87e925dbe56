"""Block-causal rollout under a prompt schedule: the loop, written as a numbered recipe.

    1. check the inputs            5. feed the conditioning blocks (clean, timestep `context_noise`)
    2. encode the prompts          6. at a block boundary where the prompt changes, switch the
    3. encode the conditioning        cross-attention cache and (optionally) recache the KV window
    4. plan blocks, reset caches   7. denoise each new block, write it to the KV cache (clean, timestep
                                      `context_noise`)
                                   8. decode each finished block and hand it back
                                      (before its cache pass, which only the next block needs)

Video-conditional generation is the schedule [(0, prompt1), (first generated frame, prompt2)] without
recache; text-to-video has no conditioning frames, image-to-video one; an interactive run switches at
`switch_frame_indices`; a live `Session` asks for the prompt at each boundary. The pipeline owns the
loop and the devices; the model is a network, the caches keep their own bookkeeping, and the sampler
holds the step formulas.

KV-recache at a switch (`recache_mode`, the frames from `KVCache.start_recache`): the latest frames are
run again under the new prompt, their clean latents at timestep `context_noise`, at their original
positions, so the cache keeps the visual past with the new prompt's semantics. `longlive` (default) does
it as LongLive v1.0: the last `local_attn_size` frames in one pass where each sees all the others, the
sinks rewritten when the rerun starts at frame 0 (and at every switch with `global_sink: false`).
`window` (ours) reruns the window less the sinks, split into the frames' original blocks (block-causal
through the cache's mask). Their clean latents are the last `cache_frames` latents the rollout keeps
on the device.

The stages carry `torch.profiler` labels (denoise, cache pass, begin block, decode, gather, prompt switch,
host copy), which a profile reads (`scripts/experiments/stream_timeline.py`); unprofiled, a few us a block.
"""

from __future__ import annotations

import logging
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial

import torch
from omegaconf import DictConfig
from torch.profiler import record_function

from longlive import parallel
from longlive.attention import RotaryTable, WindowRotary, rope_range_warning
from longlive.components import build_generator, build_prompt_encoder, build_streaming_vae
from longlive.config import ConfigError, Geometry, derive_geometry
from longlive.kv_cache import CrossAttentionCache, KVCache
from longlive.model import CausalWanModel
from longlive.parallel import StreamGroup
from longlive.runner import CUDAGraphGenerator, eager_pass
from longlive.sampler import FlowMatchSampler
from longlive.startup import PHASES
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


def iter_blocks(num_conditioning: int, num_output: int | float, frames_per_block: int) -> Iterator[Block]:
    """Split the conditioning latents, then the frames to generate, into blocks of `frames_per_block`.

    Each part ends with a shorter block when it is not a multiple, so the output is filled exactly.
    `num_output` may be `math.inf` (a live session without end): the blocks then never end.
    """
    index = 0
    for conditioning, start, end in ((True, 0, num_conditioning), (False, num_conditioning, num_output)):
        block_start = start
        while block_start < end:
            size = int(min(frames_per_block, end - block_start))
            yield Block(index, block_start, size, conditioning)
            index, block_start = index + 1, block_start + size


def plan_blocks(num_conditioning: int, num_output: int, frames_per_block: int) -> list[Block]:
    """Every block of a rollout of `num_output` latent frames (see `iter_blocks`)."""
    return list(iter_blocks(num_conditioning, num_output, frames_per_block))


@dataclass(frozen=True)
class PromptSchedule:
    """Prompts and the latent frames where each one after the first is asked to start.

    A switch takes effect at the first block boundary at or after its frame (LongLive's 40 becomes 42
    with blocks of 3); `effective_frames` says where.
    """

    prompts: tuple[str, ...]
    switch_frames: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if len(self.switch_frames) != len(self.prompts) - 1:
            raise InputError(
                f"{len(self.prompts)} prompts need {len(self.prompts) - 1} switch frames, "
                f"got {len(self.switch_frames)} (switch_frame_indices={list(self.switch_frames)})"
            )

    def prompt_at(self, block: Block) -> str:
        """The prompt of the block: the last one whose switch frame is at or before the block's start."""
        return self.prompts[bisect_right(self.switch_frames, block.start)]

    def effective_frames(self, blocks: Sequence[Block]) -> list[int | None]:
        """Per switch, the block boundary where it takes effect (None: no boundary is left after it)."""
        starts = [b.start for b in blocks]
        return [starts[i] if (i := bisect_left(starts, frame)) < len(starts) else None for frame in self.switch_frames]


@dataclass(frozen=True)
class Switch:
    """A prompt switch as it happened, at the start of block `block` (latent frame `frame`)."""

    block: int
    frame: int
    prompt: str
    recached: tuple[int, int] | None  # latent frames [a, b) rewritten under the new prompt; None without recache


@dataclass
class BlockResult:
    """One finished block: latents [B, F, C, h, w] and, when decoded, video frames [B, 3, N, H, W] in [-1, 1].

    Read-only: the latents enter the KV cache after the block is handed back (`stream_prompts`)."""

    block: Block
    latents: torch.Tensor
    frames: torch.Tensor | None
    prompt: str = ""
    switch: Switch | None = None  # set on the first block under a new prompt


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
        group: StreamGroup | None = None,
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
        # One stream over the ranks of `group` (longlive.parallel): this rank computes its share of the tokens
        # and keeps its share of the heads in the KV cache; the group's vae_rank receives the frames (decoded
        # by every rank's rows with parallel.split_decode, by the vae_rank alone without).
        self.group = group if group is not None and group.size > 1 else None
        self.sequence_parallel = None
        self._split_decode: parallel.SplitDecode | None = None
        if self.group is not None:
            self.sequence_parallel = parallel.Ulysses(self.group, self.geometry.frame_tokens, self.geometry.num_heads)
            parallel.apply(self.generator, self.sequence_parallel)
            if cfg.parallel.split_decode:
                self._split_decode = parallel.SplitDecode(vae, self.group)
        self._block_key: tuple | None = None  # the pass begun last in the KV cache, and its rope table
        self._block_rope: RotaryTable | WindowRotary | None = None
        self._rope_warned = False
        if cfg.compile_generator:
            compile_blocks(self.generator)
        self._step = partial(eager_pass, self.generator)
        if cfg.cuda_graphs:
            if self.device.type != "cuda":
                raise ConfigError(f"cuda_graphs=true needs a CUDA device, not {self.device}")
            self._step = CUDAGraphGenerator(self.generator)

    @classmethod
    def from_config(
        cls,
        cfg: DictConfig,
        device: torch.device | str | None = None,
        prompts: PromptSource | None = None,
        group: StreamGroup | None = None,
    ) -> VideoConditionalPipeline:
        """Build every component the config names, on `device` (see `longlive.components`).

        `prompts` replaces the text encoder (benchmarks exclude it; tests record prompts); `group` spreads the
        stream over several ranks (`longlive.parallel.stream_group`).
        """
        device = torch.device(device or resolve_device(cfg.device))
        with PHASES.phase("device: init", device):  # CUDA's context, apart from the first component's build
            torch.empty(0, device=device)
        generator = build_generator(cfg, device)
        vae = build_streaming_vae(cfg, device)
        # Low-VRAM mode: the text encoder (UMT5-XXL, 11 GB in bf16) stays on the CPU; only the
        # embeddings move to the device.
        low_vram = resolve_low_vram(cfg.low_vram, device)
        if prompts is None:
            prompts = build_prompt_encoder(cfg, torch.device("cpu") if low_vram else device)
        with PHASES.phase("pipeline: setup", device):  # the compile wrappers, the CUDA-graph runner
            return cls(cfg, generator, vae, prompts, device, group)

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
        `prompt2` defaults to `prompt1` and starts at the first generated frame, recaching the
        conditioning window under it only with `recache_conditioning`. Noise comes from a generator
        seeded with `seed` alone, so a sample's output does not depend on where or with what else it runs.
        """
        self._check_prompts({"prompt1": prompt1, "prompt2": prompt2})
        video = self._check_video(video)
        first_generated = self.geometry.latents_for_video_frames(self.conditioning_video_frames(video))
        schedule = PromptSchedule((prompt1, prompt2 if prompt2 is not None else prompt1), (first_generated,))
        overlap = decode and self.overlaps_decode
        results = self.stream_prompts(schedule, video, seed, decode and not overlap, self.cfg.recache_conditioning)
        yield from decode_alongside(results, self.decoder) if overlap else results

    @torch.no_grad()
    def stream_prompts(
        self,
        schedule: PromptSchedule | Callable[[Block], str],
        video: torch.Tensor | None = None,
        seed: int = 0,
        decode: bool = True,
        recache: bool | None = None,
        texts: dict[str, CrossAttentionCache] | None = None,
        num_output_frames: int | float | None = None,
    ) -> Iterator[BlockResult]:
        """Yield each block as it finishes, under the prompt `schedule` gives its block.

        The rollout ends after `num_output_frames` latent frames (default: the config's), or never with
        `math.inf` (a live session, which stops asking); nothing kept grows with its length.

        `schedule` is a `PromptSchedule` (scripted) or a function asked for each block's prompt when
        the block starts (a live session). Where the prompt changes, the cross-attention cache is
        switched and, with `recache` (default `recache_on_switch`), the KV window is recached under the
        new prompt. `texts` keeps each prompt's cross-attention cache across calls (a session's).
        """
        prompt_at = schedule.prompt_at if isinstance(schedule, PromptSchedule) else schedule
        recache = self.cfg.recache_on_switch if recache is None else recache
        texts = {} if texts is None else texts
        if isinstance(schedule, PromptSchedule):  # 1, 2: every scripted prompt encoded once, up front
            self._check_prompts({f"prompt {i}": p for i, p in enumerate(schedule.prompts)})
            for prompt in schedule.prompts:
                self._text(prompt, texts)
        video = self._check_video(video)
        conditioning = self._encode_conditioning(video)  # 3
        end = self.cfg.num_output_frames if num_output_frames is None else num_output_frames
        blocks = iter_blocks(conditioning.shape[1], end, self.geometry.frames_per_block)
        self.check_rope_range(end)
        # The latest blocks, enough to cover the cache's window: where a recache finds the original blocks.
        recent_blocks: deque[Block] = deque(maxlen=self.geometry.cache_frames + 1)
        self._reset_caches(batch_size=conditioning.shape[0])  # 4
        rng = torch.Generator(self.device).manual_seed(seed)
        recent = conditioning[:, :0]  # the latest clean latents [B, <=cache_frames, C, h, w] (what a recache reruns)

        live_group = self.group is not None and not isinstance(schedule, PromptSchedule)
        prompt, text = None, None
        for block in blocks:
            recent_blocks.append(block)
            switch = None
            wanted = prompt_at(block)
            if live_group:  # a live prompt: the decoding rank's (it takes the commands); None: it stopped
                wanted = parallel.agree(wanted, self.group)
                if wanted is None:
                    return
            if wanted != prompt:  # 6
                text = self._text(wanted, texts)
                if prompt is not None:
                    switch = self._switch(block, wanted, text, recent, recent_blocks, recache)
                prompt = wanted
            if block.conditioning:
                latents = conditioning[:, block.start : block.end]
            else:
                with record_function("denoise"):
                    latents = self._denoise_block(block, text, rng)  # 7
            frames = None
            if decode and self.joins_decode:  # 8
                with record_function("decode"):
                    frames = self.decoder.decode(latents)
            # The block is handed back before its cache pass: its frames need only the denoising (and the
            # decode), and the pass, which only the next block reads, runs when that block is asked for.
            try:
                yield BlockResult(block, latents, frames, prompt, switch)
            except GeneratorExit:  # the consumer stopped early (a session's quit)
                if live_group:  # the other ranks run the block's cache pass, then ask for the next prompt
                    self._write_context(latents, block, text)
                    if block.end < end:  # not the last block: the others ask for the next prompt
                        parallel.agree(None, self.group)
                raise
            # Every block's pass runs, the last one's too (when the loop asks past the end), so a
            # finished rollout leaves the cache complete.
            self._write_context(latents, block, text)  # 5, 7: into the KV cache
            recent = torch.cat([recent, latents], dim=1)[:, -self.kv_cache.cache_frames :]

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
            with record_function("host copy"):
                latents.append(result.latents.float().cpu())
                if result.frames is not None:  # (not on a rank of a sequence-parallel group that does not decode)
                    frames.append(result.frames.float().cpu())
        return VideoResult(
            torch.cat(latents, dim=1),
            torch.cat(frames, dim=2) if frames else None,
            self.conditioning_video_frames(video),
        )

    @property
    def decodes(self) -> bool:
        """This process receives the stream's frames and writes them (one process, or the group's vae_rank)."""
        return self.group is None or self.group.decodes

    @property
    def decoder(self) -> StreamingVAE | parallel.SplitDecode:
        """What decodes the blocks: the VAE, or with `parallel.split_decode` every rank's rows of it, gathered."""
        return self.vae if self._split_decode is None else self._split_decode

    @property
    def joins_decode(self) -> bool:
        """This process runs the decode: the one that receives the frames, or with `parallel.split_decode`
        every rank of the group (each decodes its rows; `self.decoder.decode` is collective then)."""
        return self.decodes or self._split_decode is not None

    @property
    def overlaps_decode(self) -> bool:
        """Scripted rollouts decode alongside the next block's passes (`parallel.overlap_decode`)."""
        return self.joins_decode and self.cfg.parallel.overlap_decode

    # -- the steps ---------------------------------------------------------------------------------

    def conditioning_video_frames(self, video: torch.Tensor | None) -> int:
        """Video frames the VAE consumes: the largest 4k+1 within `num_conditioning_frames` and the video."""
        if video is None:
            return 0
        available = min(self.cfg.num_conditioning_frames, video.shape[2])
        latents = self.geometry.latents_for_video_frames(available)
        return self.geometry.video_frames_for_latents(latents)

    @staticmethod
    def _check_prompts(prompts: dict[str, str | None]) -> None:
        for name, prompt in prompts.items():
            if prompt is not None and not prompt.strip():
                raise InputError(f"{name} is empty")

    def check_rope_range(self, num_frames: int | float) -> bool:
        """Warn (once per pipeline) when `num_frames` latent frames leave the RoPE positions LongLive was
        trained on; return whether they do. Absolute RoPE would extrapolate there silently. Each rollout
        calls this as it starts, with its length: `math.inf` for a session without end, which warns then
        (once per pipeline, so a server's later sessions do not repeat it)."""
        message = rope_range_warning(
            num_frames, self.cfg.model_kwargs.use_infinite_attention, self.geometry.cache_frames
        )
        if message is not None and not self._rope_warned:
            logger.warning(message)
            self._rope_warned = True
        return message is not None

    def _check_video(self, video: torch.Tensor | None) -> torch.Tensor | None:
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

    def _text(self, prompt: str, texts: dict[str, CrossAttentionCache]) -> CrossAttentionCache:
        """The prompt's cross-attention cache, computed once and kept in `texts`."""
        if prompt not in texts:
            # The encoder may live on the CPU (low-VRAM mode); it keeps each prompt's embeddings too.
            texts[prompt] = self.generator.prepare_text(self.prompts.encode(prompt).to(self.device))
        return texts[prompt]

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
                num_heads=g.num_heads // (1 if self.group is None else self.group.size),  # this rank's heads
                head_dim=g.head_dim,
                dtype=self.generator.dtype,
                device=self.device,
                window_rope=self.cfg.model_kwargs.use_infinite_attention,
            )
        self.kv_cache.reset()
        self._block_key = self._block_rope = None
        self.vae.reset_decoder()

    def _run_generator(
        self,
        latents: torch.Tensor,
        timestep: float,
        block: Block,
        text: CrossAttentionCache,
        block_sizes: list[int] | None = None,
        eager: bool = False,
    ) -> torch.Tensor:
        """One generator pass over `block`; `eager` skips the CUDA-graph runner (a recache's one-off shapes)."""
        timesteps = torch.full(latents.shape[:2], timestep, device=self.device)
        rope = self._begin_pass(block.start, latents.shape, block_sizes)
        step = partial(eager_pass, self.generator) if eager else self._step
        return step(latents, timesteps, text, rope, self.kv_cache)

    def _begin_pass(
        self, start_frame: int, shape: torch.Size, block_sizes: list[int] | None
    ) -> RotaryTable | WindowRotary:
        """Reserve the block's cache slots and build its rope table, once for the block's passes (its
        denoising steps and its cache pass): every pass of a block has the same slots and positions.

        The table is absolute, or window-relative (`use_infinite_attention`: the queries' table and the
        visible keys', from the positions the cache gives for the slots it has just reserved). With
        sequence parallelism the queries' table is cut to this rank's rows; the keys' tables stay whole.
        """
        key = (start_frame, shape, None if block_sizes is None else tuple(block_sizes))
        if key != self._block_key:
            with record_function("begin block"):
                self.kv_cache.begin_block(start_frame, shape[1], block_sizes)
                rope = self.generator.rotary_table(shape, start_frame, self.device, self.kv_cache.frame_positions)
                if self.sequence_parallel is not None:
                    rope = self.sequence_parallel.local_rope(rope)  # the rows of this rank's tokens
            self._block_key, self._block_rope = key, rope
        return self._block_rope

    def _noise_like(self, block: Block, batch_size: int, rng: torch.Generator) -> torch.Tensor:
        g = self.geometry
        shape = (batch_size, block.size, g.latent_channels, g.latent_height, g.latent_width)
        return torch.randn(shape, generator=rng, device=self.device)

    def _switch(
        self,
        block: Block,
        prompt: str,
        text: CrossAttentionCache,
        recent: torch.Tensor,
        blocks: Sequence[Block],
        recache: bool,
    ) -> Switch:
        """Switch to `prompt` before `block`; with `recache`, rewrite the cache's recent frames under it."""
        mode = self.cfg.recache_mode
        frames = self.kv_cache.start_recache(mode, self.cfg.global_sink) if recache else range(0)
        self._block_key = None  # the cache changed under the last block (sinks may be forgotten): begin anew
        if frames:
            span = Block(block.index, frames.start, len(frames), conditioning=False)
            latents = recent[:, recent.shape[1] - len(frames) :]
            sizes = None  # longlive: one pass, each frame sees all the others
            if mode == "window":
                sizes = [min(b.end, frames.stop) - max(b.start, frames.start) for b in blocks]
                sizes = [size for size in sizes if size > 0]  # the original blocks, cut to the recached frames
            # Eager: the recache's shapes vary with the switch frame; graphs are kept for the block shapes.
            self._write_context(latents, span, text, block_sizes=sizes, eager=True)
        recached = (frames.start, frames.stop) if frames else None
        logger.info(
            "block %d: prompt switch at latent frame %d -> %r (%s)",
            block.index,
            block.start,
            prompt,
            f"recached frames [{frames.start}, {frames.stop}), {mode}" if frames else "no recache",
        )
        return Switch(block.index, block.start, prompt, recached)

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
        self,
        latents: torch.Tensor,
        block: Block,
        text: CrossAttentionCache,
        block_sizes: list[int] | None = None,
        eager: bool = False,
    ) -> None:
        """Run finished (or conditioning) latents once so their K/V enter the cache.

        As LongLive's context pass: the clean latents themselves, with every frame's timestep set to
        `context_noise` (no noise is added). `block_sizes` splits a pass over several blocks (a
        `window` recache), each seeing only its own past.
        """
        with record_function("cache pass"):
            self._run_generator(latents, float(self.cfg.context_noise), block, text, block_sizes, eager)


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


def decode_alongside(results: Iterator[BlockResult], vae: StreamingVAE | parallel.SplitDecode) -> Iterator[BlockResult]:
    """Decode each block on a side CUDA stream while the generator works on the next one (`overlap_decode`).

    Block k's decode is queued behind its latents, then the next block's passes are issued (the loop asks
    `results` for block k+1) before block k is handed back, its frames on the host: the decode runs on the
    GPU next to block k+1's generator passes (on the decoding rank's GPU under sequence parallelism, where
    the other ranks would otherwise wait). Exact: the same decoder calls on the same latents in the same
    order; only when they run changes. The price: block k+1's prompt is decided before block k is handed
    back, which a live session (prompts typed while watching) must not pay; jobs and the benchmark may.
    On a CPU the decode simply runs in order. A split decode's ranks all run this, each block's gather
    queued on the side stream too; the ranks that do not receive frames hand back blocks without them.
    """
    side = torch.cuda.Stream(vae.device) if vae.device.type == "cuda" else None
    pending: tuple[BlockResult, torch.Tensor] | None = None
    for result in results:  # asking for block k+1 issues its passes (and block k's cache pass)
        if pending is not None:
            yield _finish_decode(*pending, side)
        pending = (result, _start_decode(result.latents, vae, side))
    if pending is not None:
        yield _finish_decode(*pending, side)


def _start_decode(
    latents: torch.Tensor, vae: StreamingVAE | parallel.SplitDecode, side: torch.cuda.Stream | None
) -> torch.Tensor | None:
    """Queue the decode of `latents` on `side`, after the work that made them."""
    with record_function("decode"):
        if side is None:
            return vae.decode(latents)
        side.wait_stream(torch.cuda.current_stream(latents.device))
        with torch.cuda.stream(side):
            return vae.decode(latents)


def _finish_decode(result: BlockResult, frames: torch.Tensor | None, side: torch.cuda.Stream | None) -> BlockResult:
    """The block with its frames, copied to the host on `side` (a copy on the main stream would wait for
    the next block's passes queued there)."""
    if side is not None and frames is not None:
        with torch.cuda.stream(side), record_function("host copy"):
            frames = frames.to("cpu")  # waits for this decode only: the next one is queued after this call
    return replace(result, frames=frames)
