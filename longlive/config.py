"""Typed configuration: LongLive's keys and defaults, model presets, and the geometry derived from them.

Configs are loaded in three layers (dataclass defaults, then the YAML file, then command-line dotlist
overrides such as ``num_output_frames=120``) and validated once, before any model is built. Every
error names the offending key. Library code reads typed fields; it never guesses defaults.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError


class ConfigError(ValueError):
    """A user's configuration is wrong; the message names the key and what to do."""


# ----------------------------------------------------------------------------------------------
# Model presets: the network's shape. The published size is the default; `tiny` runs on CPU.
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WanArchitecture:
    """Shape of the Wan2.1 DiT (names follow the original Wan code)."""

    dim: int
    ffn_dim: int
    num_heads: int
    num_layers: int
    freq_dim: int = 256
    text_dim: int = 4096
    text_len: int = 512
    in_channels: int = 16
    out_channels: int = 16
    patch_size: tuple[int, int, int] = (1, 2, 2)
    eps: float = 1e-6

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads


@dataclass(frozen=True)
class VAEArchitecture:
    """Shape of the Wan2.1 VAE as diffusers' ``AutoencoderKLWan`` takes it."""

    base_dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temporal_downsample: tuple[bool, ...] = (False, True, True)

    @property
    def spatial_stride(self) -> int:
        return 2 ** (len(self.dim_mult) - 1)

    @property
    def temporal_stride(self) -> int:
        return 2 ** sum(self.temporal_downsample)


@dataclass(frozen=True)
class TextEncoderArchitecture:
    """Shape of the UMT5 encoder (transformers' ``UMT5Config`` fields)."""

    vocab_size: int = 256384
    d_model: int = 4096
    d_kv: int = 64
    d_ff: int = 10240
    num_layers: int = 24
    num_heads: int = 64
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128


@dataclass(frozen=True)
class ModelPreset:
    generator: WanArchitecture
    vae: VAEArchitecture
    text_encoder: TextEncoderArchitecture


PRESETS: dict[str, ModelPreset] = {
    "Wan2.1-T2V-1.3B": ModelPreset(
        generator=WanArchitecture(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30),
        vae=VAEArchitecture(),
        text_encoder=TextEncoderArchitecture(),
    ),
    # The same VAE and UMT5-XXL; Wan's config.json for the 14B text-to-video model.
    "Wan2.1-T2V-14B": ModelPreset(
        generator=WanArchitecture(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40),
        vae=VAEArchitecture(),
        text_encoder=TextEncoderArchitecture(),
    ),
    # Two layers, two heads, a VAE of base width 8 and a 2-layer UMT5: the real code path on CPU in seconds.
    "tiny": ModelPreset(
        generator=WanArchitecture(dim=32, ffn_dim=64, num_heads=2, num_layers=2, freq_dim=32, text_dim=32, text_len=16),
        vae=VAEArchitecture(base_dim=8),  # the published VAE structure, narrower
        text_encoder=TextEncoderArchitecture(
            vocab_size=384,
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=16,
        ),
    ),
    # The demo model (scripts/train_demo.py, configs/demo_video_conditional.yaml): 64x64 videos of the
    # demo world, 8x8 latents, 16 tokens a frame; about 6.4M parameters, 26 MB in float32 all together.
    "demo": ModelPreset(
        generator=WanArchitecture(dim=192, ffn_dim=768, num_heads=3, num_layers=6, text_dim=128, text_len=48),
        vae=VAEArchitecture(base_dim=12),
        text_encoder=TextEncoderArchitecture(
            vocab_size=384,  # the byte-level tokenizer's 259 ids, rounded up
            d_model=128,
            d_kv=32,
            d_ff=256,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=16,
            relative_attention_max_distance=48,
        ),
    ),
}


# The diffusers folders of the published models name the same architectures.
PRESET_ALIASES = {f"{name}-Diffusers": name for name in ("Wan2.1-T2V-1.3B", "Wan2.1-T2V-14B")}

# `architecture` keys: Wan's own config.json names and diffusers' `WanTransformer3DModel` names, each
# -> the `WanArchitecture` field it sets (None: derived or checked, see `_architecture_fields`).
WAN_ARCHITECTURE_KEYS = {
    "dim": "dim",
    "ffn_dim": "ffn_dim",
    "num_heads": "num_heads",
    "num_layers": "num_layers",
    "freq_dim": "freq_dim",
    "text_dim": "text_dim",
    "text_len": "text_len",
    "in_dim": "in_channels",
    "out_dim": "out_channels",
    "patch_size": "patch_size",
    "eps": "eps",
}
DIFFUSERS_ARCHITECTURE_KEYS = {
    "num_attention_heads": "num_heads",
    "attention_head_dim": None,  # dim = num_attention_heads * attention_head_dim
    "in_channels": "in_channels",
    "out_channels": "out_channels",
}
# Keys of those files that describe nothing this engine builds differently; checked where they matter.
ARCHITECTURE_METADATA_KEYS = {
    "_class_name",
    "_diffusers_version",
    "model_type",  # must be t2v
    "window_size",  # Wan's bidirectional local window, unused (-1, -1)
    "qk_norm",  # must be on (Wan's RMS q/k norm)
    "cross_attn_norm",  # must be on (norm3)
    "rope_max_seq_len",
    "image_dim",  # must be null (text-to-video)
    "added_kv_proj_dim",  # must be null
    "pos_embed_seq_len",  # must be null
}


def model_preset(cfg: InferenceConfig | DictConfig) -> ModelPreset:
    """The shapes a config names: the preset `model_name`, with `architecture`'s generator keys over it.

    A `model_name` that is no preset needs `architecture` with the generator's size (dim, ffn_dim,
    heads, layers); its VAE and text encoder are Wan2.1's (every Wan2.1 text-to-video size shares them).
    """
    name = PRESET_ALIASES.get(cfg.model_name, cfg.model_name)
    overrides = _architecture_fields(cfg.architecture)
    if name in PRESETS:
        base = PRESETS[name]
    elif overrides:
        base = PRESETS["Wan2.1-T2V-1.3B"]
        missing = [key for key in ("dim", "ffn_dim", "num_heads", "num_layers") if key not in overrides]
        if missing:
            raise ConfigError(
                f"architecture.{missing[0]} is not set: model_name '{cfg.model_name}' is not a preset, so "
                f"architecture must give dim, ffn_dim, num_heads and num_layers"
            )
    else:
        raise ConfigError(
            f"model_name '{cfg.model_name}' is not one of {sorted([*PRESETS, *PRESET_ALIASES])}; "
            f"for another size give its shape under 'architecture' (Wan's or diffusers' config.json keys)"
        )
    generator = replace(base.generator, **overrides)
    _check_generator(generator, base)
    return replace(base, generator=generator)


def _architecture_fields(raw: Any) -> dict[str, Any]:
    """`architecture` (a mapping, or the path of a Wan/diffusers config.json) as `WanArchitecture` fields."""
    if raw is None:
        return {}
    if isinstance(raw, str):
        raw = _read_architecture_json(raw)
    elif OmegaConf.is_config(raw):
        raw = OmegaConf.to_container(raw)
    if not isinstance(raw, dict):
        raise ConfigError(f"architecture={raw!r} must be a mapping of config.json keys or the path of a config.json")
    fields: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ARCHITECTURE_METADATA_KEYS:
            _check_metadata(key, value)
        elif key in WAN_ARCHITECTURE_KEYS or key in DIFFUSERS_ARCHITECTURE_KEYS:
            field_name = WAN_ARCHITECTURE_KEYS.get(key) or DIFFUSERS_ARCHITECTURE_KEYS.get(key)
            if field_name is not None:
                _set_field(fields, key, field_name, _architecture_value(key, value))
        else:
            known = sorted([*WAN_ARCHITECTURE_KEYS, *DIFFUSERS_ARCHITECTURE_KEYS, *ARCHITECTURE_METADATA_KEYS])
            raise ConfigError(
                f"architecture.{key} is not a Wan or diffusers transformer key (known: {', '.join(known)})"
            )
    if "attention_head_dim" in raw:
        head_dim = _architecture_value("attention_head_dim", raw["attention_head_dim"])
        heads = fields.get("num_heads")
        if heads is None:
            raise ConfigError("architecture.attention_head_dim needs num_attention_heads (or num_heads) beside it")
        _set_field(fields, "attention_head_dim", "dim", heads * head_dim)
    return fields


def _read_architecture_json(path: str) -> Any:
    import json

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"architecture: config.json not found: {path}") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ConfigError(f"architecture: {path} is not a readable JSON file ({err})") from None


def _architecture_value(key: str, value: Any) -> Any:
    if key == "eps":
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
            raise ConfigError(f"architecture.eps={value!r} must be a number in (0, 1)")
        return float(value)
    if key == "patch_size":
        ok = isinstance(value, list | tuple) and len(value) == 3
        ok = ok and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
        if not ok:
            raise ConfigError(f"architecture.patch_size={value!r} must be three positive integers (t, h, w)")
        if value[0] != 1:
            raise ConfigError(
                f"architecture.patch_size={list(value)}: the temporal patch must be 1 (frames are causal)"
            )
        return tuple(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"architecture.{key}={value!r} must be a positive integer")
    return value


def _set_field(fields: dict[str, Any], key: str, field_name: str, value: Any) -> None:
    """Set a field once: two names of it (Wan's and diffusers') must agree."""
    if field_name in fields and fields[field_name] != value:
        raise ConfigError(
            f"architecture.{key}={value!r} contradicts {field_name}={fields[field_name]!r} given by another key"
        )
    fields[field_name] = value


def _check_metadata(key: str, value: Any) -> None:
    wanted = {"model_type": ("t2v",), "qk_norm": (True, "rms_norm_across_heads"), "cross_attn_norm": (True,)}
    if key in wanted and value not in wanted[key]:
        raise ConfigError(f"architecture.{key}={value!r}: this engine builds only {key}={wanted[key][0]!r}")
    if key in ("image_dim", "added_kv_proj_dim", "pos_embed_seq_len") and value is not None:
        raise ConfigError(f"architecture.{key}={value!r}: image conditioning is not built here (text-to-video only)")


def _check_generator(arch: WanArchitecture, preset: ModelPreset) -> None:
    """The generator fits itself, the VAE's latents and the text encoder's embeddings."""
    if arch.dim % arch.num_heads:
        raise ConfigError(f"architecture: dim={arch.dim} is not a multiple of num_heads={arch.num_heads}")
    if arch.head_dim % 2 or arch.freq_dim % 2:
        raise ConfigError(
            f"architecture: head size dim/num_heads={arch.head_dim} and freq_dim={arch.freq_dim} must be even (rotary"
            " and sinusoidal embeddings pair channels)"
        )
    z_dim = preset.vae.z_dim
    for key, value in (("in_dim", arch.in_channels), ("out_dim", arch.out_channels)):
        if value != z_dim:
            raise ConfigError(f"architecture.{key}={value} must equal the VAE's latent channels ({z_dim})")
    if arch.text_dim != preset.text_encoder.d_model:
        raise ConfigError(
            f"architecture.text_dim={arch.text_dim} must equal the text encoder's width ({preset.text_encoder.d_model})"
        )


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
