"""Model presets: the network's shape, by name, and the `architecture` key that sets it over a preset.

A preset names the three networks' sizes (the Wan2.1 DiT, its VAE, the UMT5 text encoder). The published
sizes are `Wan2.1-T2V-1.3B` (the default) and `Wan2.1-T2V-14B`; `demo` is the repository's trained demo
model and `tiny` runs the real code path on CPU in seconds. `architecture` (Wan's or diffusers'
config.json keys, or the path of such a file) overrides the generator's shape; `model_preset(cfg)` is
the one place both are read. Errors are `ConfigError`s naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from longlive.errors import ConfigError

if TYPE_CHECKING:
    from longlive.config import InferenceConfig


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
    """The three networks a model name builds: generator, VAE and text encoder."""

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
