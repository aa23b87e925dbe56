"""Typed configuration: LongLive's keys and defaults, their loading and validation, and the geometry derived.

Configs are loaded in three layers (dataclass defaults, then the YAML file, then command-line dotlist
overrides such as ``num_output_frames=120``) and validated once, before any model is built. Every
error names the offending key. Library code reads typed fields; it never guesses defaults. The
networks' shapes (`model_name`, `architecture`) are read in `presets.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from longlive.errors import ConfigError  # also longlive.config.ConfigError, where callers import it
from longlive.presets import model_preset

# ----------------------------------------------------------------------------------------------
# The config file: LongLive's keys (same names, same meaning) plus the engine's own.
# ----------------------------------------------------------------------------------------------


@dataclass
class ModelKwargs:
    # Latent frames each query block sees, sink and current block included; -1 = global attention
    # over the whole output (the cache then holds `num_output_frames` frames).
    local_attn_size: int = 12
    timestep_shift: float = 5.0
    # First latent frames kept in the cache forever (attention sinks); they count inside the window.
    sink_size: int = 3
    # LongLive's Infinity-RoPE (Block-Relativistic RoPE): keys are cached without RoPE and every pass
    # rotates the queries and the visible keys by their position in the window (sinks 0..S-1, then the
    # window, then the block), not in the video, so positions stay within local_attn_size however long
    # the video. false: absolute frame positions, which pass the trained range after 240 latent frames.
    use_infinite_attention: bool = False


@dataclass
class AdapterConfig:
    type: str = "lora"
    rank: int = 256
    alpha: float = 256.0
    dropout: float = 0.0
    dtype: str = "bfloat16"
    verbose: bool = False


@dataclass
class ParallelConfig:
    # Ranks that share ONE stream (Ulysses sequence parallelism, longlive/parallel.py); 1 = a stream per
    # rank. Under torchrun the world is split into groups of `sequence` consecutive ranks.
    sequence: int = 1
    # Rank within a group that receives the frames (the only one decoding with split_decode false) and
    # writes the outputs.
    vae_rank: int = 0
    # Jobs and the benchmark: decode each block on a side CUDA stream while the generator works on the
    # next block (handed back one block later; exact). Any `sequence`; a live session decodes in line.
    overlap_decode: bool = False
    # Split each block's VAE decode by rows over the group's ranks (longlive/vae_split.py; exact): every
    # rank decodes its rows plus a halo, the vae_rank gathers the frames. On 2 H200s 44.3 against 41.4
    # frames/s and 7.4 against 9.3 GiB (BENCHMARKS.md, 2026-11-30); false: the vae_rank decodes alone.
    split_decode: bool = True


@dataclass
class InferenceConfig:
    # --- LongLive's architecture keys ---
    denoising_step_list: list[float] = field(default_factory=lambda: [1000.0, 750.0, 500.0, 250.0])
    warp_denoising_step: bool = True
    num_frame_per_block: int = 3
    # A preset (PRESETS, or its diffusers folder's name), or any name with `architecture` below.
    model_name: str = "Wan2.1-T2V-1.3B"
    # The generator's shape in Wan's config.json keys (dim, ffn_dim, num_heads, num_layers, freq_dim,
    # text_dim, text_len, in_dim, out_dim, patch_size, eps) or diffusers' (num_attention_heads,
    # attention_head_dim, in_channels, out_channels), over the preset's; or the path of such a config.json.
    architecture: Any = None
    model_kwargs: ModelKwargs = field(default_factory=ModelKwargs)
    # --- LongLive's inference keys ---
    data_path: str | None = None
    output_folder: str = "videos"
    inference_iter: int = -1
    # Latent frames of the whole output, conditioning included (T latent frames decode to 4T-3 frames).
    num_output_frames: int = 240
    use_ema: bool = False
    seed: int = 0
    num_samples: int = 1
    # LongLive's output naming switch: true (index-named outputs) is the only one here, since resume
    # finds outputs by index; false (prompt-named) is refused when the config loads.
    save_with_index: bool = True
    # At a recache, keep the sink frames (true) or empty the cache and let the rerun rewrite them
    # (false, LongLive's sink_recache_after_switch); recache_mode "longlive" only.
    global_sink: bool = True
    # Timestep the cache passes give the clean latents of finished (and conditioning) frames and of a
    # recache (as LongLive: the latents are not noised; 0 = clean).
    context_noise: float = 0.0
    # Interactive job: latent frames where the next prompt starts ("40, 80" or [40, 80]); a switch takes
    # effect at the first block boundary at or after its index.
    switch_frame_indices: Any = None
    # Rewrite the cache's recent frames under the new prompt at a switch (LongLive's KV-recache).
    recache_on_switch: bool = True
    # How: "longlive" (LongLive v1.0: the last local_attn_size frames in one pass, each seeing all the
    # others; sinks rewritten when the rerun starts at frame 0) or "window" (ours: the window less the
    # sinks, block-causal in the frames' original blocks; sinks never rewritten).
    recache_mode: str = "longlive"
    generator_ckpt: str | None = None
    lora_ckpt: str | None = None
    adapter: AdapterConfig | None = None
    # --- The video-conditional job ---
    # Video frames taken from the input video; the VAE consumes the largest 4k+1 that fit.
    num_conditioning_frames: int = 40
    # Recache the conditioning window under prompt2 when generation starts (off: LongLive's behaviour).
    recache_conditioning: bool = False
    # --- Batch jobs ---
    # Regenerate samples whose videos already exist in output_folder (default: skip them, i.e. resume).
    overwrite: bool = False
    # Also save each output's latents [T, C, h, w] (float32) as a .pt beside its mp4.
    save_latents: bool = False
    # Text encoder kept on the CPU; null = automatic (on when the GPU has under 40 GiB free).
    low_vram: bool | None = None
    # --- Engine keys ---
    height: int = 480
    width: int = 832
    fps: int = 16
    dtype: str = "bfloat16"
    device: str = "auto"
    # Speed switches; each has a test holding it to the eager reference path (see BENCHMARKS.md).
    compile_generator: bool = False  # torch.compile every transformer block (fuses the elementwise work)
    cuda_graphs: bool = False  # replay each block shape's generator pass as a CUDA graph (CUDA only)
    fold_vae_convs: bool = False  # the VAE's causal 3D convolutions as 2D ones (vae_convs.py)
    fuse_vae_norms: bool = False  # the VAE's RMS norms (+ SiLU) as one fused kernel each (vae_norms.py)
    compile_vae: bool = False  # torch.compile the VAE decoder (static shapes; about 90 s on the first block)
    fp8_linears: bool = False  # the transformer blocks' linears in float8, row-wise scales (fp8.py; not exact)
    fuse_ffn_gelu: bool = False  # the FFN's GELU in its first product's epilogue on CUDA (ffn.py; bf16: not bit-exact)
    # Folder for PyTorch's compile caches (compile_cache.py): a second job on the machine skips most of
    # the compilation. None = PyTorch's default per-user folder under /tmp.
    compile_cache_dir: str | None = None
    # One stream over several ranks (README, "One stream over several GPUs").
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    # Folder of Wan2.1-T2V-1.3B, original (LongLive's wan_models/Wan2.1-T2V-1.3B) or diffusers layout
    # (Wan2.1-T2V-1.3B-Diffusers): base generator, VAE, text encoder, tokenizer. None = random weights.
    wan_model_dir: str | None = None
    # Fold the LoRA into the base weights after loading (same output, base-model speed).
    merge_lora: bool = True


# The speed switches above, in the order the README's table lists them (the benchmark reports those on).
SPEED_SWITCHES = (
    "compile_generator",
    "cuda_graphs",
    "fold_vae_convs",
    "fuse_vae_norms",
    "compile_vae",
    "fp8_linears",
    "fuse_ffn_gelu",
)

DTYPES = ("float32", "bfloat16", "float16")
RECACHE_MODES = ("longlive", "window")


# ----------------------------------------------------------------------------------------------
# Geometry: every size the engine uses, derived in one place from the config.
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Geometry:
    """Sizes derived from the resolution, VAE strides, patch size and attention window."""

    latent_channels: int
    latent_height: int
    latent_width: int
    frame_tokens: int  # tokens per latent frame after patchify
    frames_per_block: int
    cache_frames: int  # latent frames the KV cache holds (sink + rolling window)
    sink_frames: int
    num_layers: int
    num_heads: int
    head_dim: int
    text_len: int
    vae_temporal_stride: int

    @property
    def cache_tokens(self) -> int:
        return self.cache_frames * self.frame_tokens

    def video_frames_for_latents(self, num_latent_frames: int) -> int:
        """T latent frames decode to s*(T-1)+1 video frames (4T-3 for the Wan VAE)."""
        return 0 if num_latent_frames == 0 else self.vae_temporal_stride * (num_latent_frames - 1) + 1

    def latents_for_video_frames(self, num_video_frames: int) -> int:
        """Latent frames the VAE makes from the largest s*k+1 prefix of `num_video_frames` frames."""
        return 0 if num_video_frames <= 0 else (num_video_frames - 1) // self.vae_temporal_stride + 1


def derive_geometry(cfg: InferenceConfig | DictConfig) -> Geometry:
    preset = model_preset(cfg)
    arch, vae = preset.generator, preset.vae
    _, patch_h, patch_w = arch.patch_size
    latent_h, latent_w = cfg.height // vae.spatial_stride, cfg.width // vae.spatial_stride
    local = cfg.model_kwargs.local_attn_size
    cache_frames = cfg.num_output_frames if local == -1 else local
    sink = 0 if local == -1 else cfg.model_kwargs.sink_size
    return Geometry(
        latent_channels=vae.z_dim,
        latent_height=latent_h,
        latent_width=latent_w,
        frame_tokens=(latent_h // patch_h) * (latent_w // patch_w),
        frames_per_block=cfg.num_frame_per_block,
        cache_frames=cache_frames,
        sink_frames=sink,
        num_layers=arch.num_layers,
        num_heads=arch.num_heads,
        head_dim=arch.head_dim,
        text_len=arch.text_len,
        vae_temporal_stride=vae.temporal_stride,
    )


# ----------------------------------------------------------------------------------------------
# Loading and validation.
# ----------------------------------------------------------------------------------------------


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> DictConfig:
    """Defaults, then the YAML at `path`, then dotted `overrides`; validated, read-only."""
    cfg = OmegaConf.structured(InferenceConfig)
    layers: list[tuple[str, DictConfig]] = []
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        layers.append((str(path), _read_yaml(path)))
    if overrides:
        layers.append(("command line", OmegaConf.from_dotlist(list(overrides))))
    for source, layer in layers:
        cfg = _merge(cfg, layer, source)
    validate(cfg)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def _read_yaml(path: Path) -> DictConfig:
    """The YAML mapping at `path`; a file that is not one (binary, broken YAML, a list) is one ConfigError."""
    import yaml

    try:
        layer = OmegaConf.load(path)
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not a text (YAML) file") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}") from None
    except OSError as err:
        raise ConfigError(f"config file {path} cannot be read: {err.strerror or err}") from None
    except OmegaConfBaseException as err:
        raise ConfigError(f"config file {path}: {str(err).splitlines()[0]}") from None
    if not isinstance(layer, DictConfig):
        raise ConfigError(f"config file {path} must be a YAML mapping of keys, not a {type(layer).__name__}")
    return layer


def _merge(cfg: DictConfig, layer: DictConfig, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(cfg, layer)
    except ConfigKeyError as err:
        raise ConfigError(f"{source}: unknown key '{err.full_key}' (check its spelling)") from None
    except ValidationError as err:
        reason = err.msg.splitlines()[0]
        raise ConfigError(f"{source}: key '{err.full_key}' has the wrong type: {reason}") from None
    except OmegaConfBaseException as err:
        raise ConfigError(f"{source}: {str(err).splitlines()[0]}") from None


def validate(cfg: DictConfig) -> None:
    """Reject impossible combinations with one error naming the key."""
    preset = model_preset(cfg)
    if cfg.dtype not in DTYPES:
        raise ConfigError(f"dtype '{cfg.dtype}' is not one of {DTYPES}")
    _validate_adapter(cfg)
    _require(
        cfg.save_with_index,
        "save_with_index",
        "=false (LongLive's prompt-named outputs) is not supported: outputs are named "
        "rank{rank}-{index}-{seed}_{model_type}.mp4 and results.jsonl gives each index's prompts; set it to true",
    )
    stride = preset.vae.spatial_stride * max(preset.generator.patch_size[1:])
    for key in ("height", "width"):
        if cfg[key] <= 0 or cfg[key] % stride:
            raise ConfigError(f"{key}={cfg[key]} must be a positive multiple of {stride} (VAE stride x patch)")
    _require(cfg.num_frame_per_block >= 1, "num_frame_per_block", "must be at least 1")
    _require(cfg.num_output_frames >= 1, "num_output_frames", "must be at least 1 latent frame")
    _require(cfg.num_conditioning_frames >= 0, "num_conditioning_frames", "must be 0 or more video frames")
    _require(0 <= cfg.context_noise <= 1000, "context_noise", "must lie in [0, 1000]")
    _require(cfg.recache_mode in RECACHE_MODES, "recache_mode", f"={cfg.recache_mode!r} is not one of {RECACHE_MODES}")
    _require(
        cfg.global_sink or cfg.recache_mode == "longlive",
        "global_sink",
        "=false rewrites the sinks at each switch, which recache_mode=window never does; use recache_mode=longlive",
    )
    _require(len(cfg.denoising_step_list) >= 1, "denoising_step_list", "needs at least one step")
    steps = list(cfg.denoising_step_list)
    _require(all(0 < t <= 1000 for t in steps), "denoising_step_list", f"{steps}: each step must lie in (0, 1000]")
    _require(
        all(a > b for a, b in zip(steps, steps[1:], strict=False)),
        "denoising_step_list",
        f"{steps} must strictly decrease",
    )
    _require(cfg.model_kwargs.timestep_shift > 0, "model_kwargs.timestep_shift", "must be positive")
    _validate_window(cfg)
    _validate_parallel(cfg)
    switch_frames(cfg)
    geometry = derive_geometry(cfg)
    conditioning = geometry.latents_for_video_frames(cfg.num_conditioning_frames)
    _require(
        conditioning < cfg.num_output_frames,
        "num_output_frames",
        f"={cfg.num_output_frames} latent frames leaves nothing to generate after "
        f"{conditioning} conditioning latent frames (num_conditioning_frames={cfg.num_conditioning_frames})",
    )


def _validate_adapter(cfg: DictConfig) -> None:
    adapter = cfg.adapter
    if adapter is None:
        return
    _require(adapter.type == "lora", "adapter.type", f"='{adapter.type}' is not supported: only 'lora' (LongLive's)")
    _require(adapter.rank >= 1, "adapter.rank", f"={adapter.rank} must be at least 1")
    _require(adapter.alpha > 0, "adapter.alpha", f"={adapter.alpha} must be positive")
    _require(0 <= adapter.dropout < 1, "adapter.dropout", f"={adapter.dropout} must lie in [0, 1)")
    _require(adapter.dtype in DTYPES, "adapter.dtype", f"='{adapter.dtype}' is not one of {DTYPES}")


def _validate_window(cfg: DictConfig) -> None:
    local, sink = cfg.model_kwargs.local_attn_size, cfg.model_kwargs.sink_size
    if local == -1:
        return
    _require(local >= 1, "model_kwargs.local_attn_size", f"={local} must be -1 (global) or at least 1")
    _require(0 <= sink < local, "model_kwargs.sink_size", f"={sink} must lie in [0, local_attn_size={local})")
    _require(
        cfg.num_frame_per_block <= local - sink,
        "num_frame_per_block",
        f"={cfg.num_frame_per_block} must fit the rolling window local_attn_size - sink_size = {local - sink}",
    )


def _validate_parallel(cfg: DictConfig) -> None:
    """`parallel.*` against the model; the world size is checked where torchrun's is known (`parallel.py`)."""
    sequence, heads = cfg.parallel.sequence, model_preset(cfg).generator.num_heads
    _require(sequence >= 1, "parallel.sequence", f"={sequence} must be at least 1")
    _require(heads % sequence == 0, "parallel.sequence", f"={sequence} must divide the model's {heads} heads")
    _require(
        0 <= cfg.parallel.vae_rank < sequence,
        "parallel.vae_rank",
        f"={cfg.parallel.vae_rank} must lie in [0, parallel.sequence={sequence})",
    )
    latent_rows = cfg.height // model_preset(cfg).vae.spatial_stride
    _require(
        not cfg.parallel.split_decode or latent_rows >= sequence,
        "parallel.split_decode",
        f"cannot split {latent_rows} latent rows (height={cfg.height}) over parallel.sequence={sequence} ranks",
    )


def switch_frames(cfg: DictConfig) -> tuple[int, ...]:
    """`switch_frame_indices` as increasing latent frames inside (0, num_output_frames); () when unset."""
    raw = cfg.switch_frame_indices
    if raw is None:
        return ()
    if isinstance(raw, str):
        items = [item.strip() for item in raw.split(",") if item.strip()]
    elif isinstance(raw, int) and not isinstance(raw, bool):
        items = [raw]
    elif OmegaConf.is_list(raw) or isinstance(raw, list | tuple):
        items = list(raw)
    else:
        raise ConfigError(f"switch_frame_indices={raw!r} must be a list of latent frames or a string like '40, 80'")
    frames = []
    for item in items:
        try:
            frames.append(int(item))
        except (TypeError, ValueError):
            raise ConfigError(f"switch_frame_indices: {item!r} is not an integer latent frame") from None
        if isinstance(item, float | bool) and item != frames[-1]:
            raise ConfigError(f"switch_frame_indices: {item!r} is not an integer latent frame")
    _require(
        all(0 < f < cfg.num_output_frames for f in frames),
        "switch_frame_indices",
        f"={frames}: each must lie in (0, num_output_frames={cfg.num_output_frames})",
    )
    _require(
        all(a < b for a, b in zip(frames, frames[1:], strict=False)), "switch_frame_indices", f"={frames} must increase"
    )
    return tuple(frames)


def _require(ok: bool, key: str, message: str) -> None:
    """Raise `key=...message` (messages that start with '=' carry the value) or `key message`."""
    if not ok:
        raise ConfigError(f"{key}{message}" if message.startswith("=") else f"{key} {message}")


def torch_dtype(name: str):
    import torch

    return getattr(torch, name)
