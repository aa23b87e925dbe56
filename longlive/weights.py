"""Loading the published weights from local files, in the layouts users hold them.

    generator     Wan original (`diffusion_pytorch_model.safetensors`), diffusers (`transformer/`),
                  LongLive (`longlive_base.pt`: {"generator", "generator_ema"}, keys `model.`-prefixed,
                  EMA keys possibly carrying `_fsdp_wrapped_module.`)
    VAE           Wan original (`Wan2.1_VAE.pth`, converted by diffusers) or diffusers (`vae/`)
    text encoder  Wan's own T5 names (`models_t5_umt5-xxl-enc-bf16.pth`, converted here) or
                  transformers (`text_encoder/`), with the tokenizer folder

Models are built on the meta device and the checkpoint's tensors assigned one by one, each cast to the
configured dtype on the target device, so no float32 copy of a whole model sits in memory. Loading is
strict: a missing or unexpected key or a wrong shape is one `WeightsError` naming the file, the layout it
looked like and the first offending keys.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

SAFETENSORS = "diffusion_pytorch_model.safetensors"
SHOWN_KEYS = 5


class WeightsError(ValueError):
    """A weights file cannot be used as asked; the message names the file and what is wrong."""


# ----------------------------------------------------------------------------------------------
# Reading files without copying them: safetensors lazily, torch files memory-mapped.
# ----------------------------------------------------------------------------------------------


class SafetensorsFiles(Mapping[str, torch.Tensor]):
    """The tensors of one or more safetensors files (a sharded checkpoint), read on access."""

    def __init__(self, paths: Iterable[Path]) -> None:
        from safetensors import safe_open

        self._handles = {}
        self._where: dict[str, object] = {}
        for path in paths:
            try:
                handle = safe_open(str(path), framework="pt", device="cpu")
            except Exception as err:  # safetensors' SafetensorError, OSError
                raise WeightsError(f"{path}: {_unreadable_safetensors(path, err)}") from None
            self._handles[path] = handle
            for key in handle.keys():
                self._where[key] = handle

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._where[key].get_tensor(key)

    def __iter__(self):
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._where[key].get_slice(key).get_shape())


def read_checkpoint(path: str | Path) -> Mapping:
    """A checkpoint file or folder as a mapping (tensors, or LongLive's dict of state dicts)."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"weights not found: {path}")
    if path.is_dir():
        return SafetensorsFiles(_safetensors_in(path))
    if path.suffix == ".safetensors":
        return SafetensorsFiles([path])
    return _load_torch_file(path)


def _load_torch_file(path: Path) -> Mapping:
    """`torch.load` memory-mapped (zip format), or read whole (torch's legacy format, which cannot be mapped);
    a file that is neither is one WeightsError saying what the file looks like, not what mmap needs."""
    if path.stat().st_size == 0:
        raise WeightsError(f"{path}: the file is empty (0 bytes), not a torch checkpoint")
    with open(path, "rb") as file:
        is_zip = file.read(4) == b"PK\x03\x04"
    try:
        return torch.load(path, map_location="cpu", mmap=is_zip, weights_only=True)
    except Exception as err:  # torch raises many types for a file that is not a checkpoint
        if is_zip:
            problem = "a zip archive torch cannot read: truncated or corrupt (download it again)"
        elif isinstance(err, pickle.UnpicklingError) and "Unsupported global" in str(err):
            problem = "holds objects other than tensors, which are not loaded (weights_only)"
        else:
            problem = "not a torch checkpoint (neither torch.save's zip format nor its legacy one)"
        raise WeightsError(f"{path}: {problem}") from None


def _unreadable_safetensors(path: Path, err: Exception) -> str:
    """What is wrong with a .safetensors file that safetensors refuses to open, in the user's terms."""
    size = path.stat().st_size if path.is_file() else 0
    if size == 0:
        return "the file is empty (0 bytes), not a .safetensors file"
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    if "not fully covered" in reason or "incomplete" in reason:
        return f"a truncated .safetensors file ({size} bytes, fewer than its header lists; download it again)"
    return f"not a .safetensors file (its header cannot be read: {reason})"


def _safetensors_in(folder: Path) -> list[Path]:
    index = folder / f"{SAFETENSORS}.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [folder / shard for shard in shards]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise WeightsError(f"{folder}: no .safetensors files in this folder")
    return files


def tensor_shape(tensors: Mapping, key: str) -> tuple[int, ...]:
    """A tensor's shape without reading it where the mapping can tell (safetensors, renamed views)."""
    if hasattr(tensors, "shape"):
        return tensors.shape(key)
    return tuple(tensors[key].shape)


# ----------------------------------------------------------------------------------------------
# What a file is: the kind of model and the layout of its names.
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    kind: str  # generator | vae | text_encoder | lora | unknown
    name: str  # e.g. "Wan original", "diffusers", "LongLive .pt"


def detect_layout(tensors: Mapping) -> Layout:
    """Tell the kind and naming of a checkpoint from its keys."""
    if "generator" in tensors or "generator_ema" in tensors:
        return Layout("generator", "LongLive .pt")
    if "generator_lora" in tensors:
        return Layout("lora", "LongLive LoRA .pt")
    keys = list(tensors)
    if any("lora_A" in k or "lora_B" in k for k in keys):
        return Layout("lora", "peft LoRA state dict")
    if any(k.startswith(("model.", "_fsdp_wrapped_module.")) for k in keys):
        return Layout("generator", "LongLive state dict (model.-prefixed)")
    if "blocks.0.self_attn.q.weight" in keys:
        return Layout("generator", "Wan original")
    if "blocks.0.attn1.to_q.weight" in keys:
        return Layout("generator", "diffusers")
    if "decoder.middle.0.residual.0.gamma" in keys:
        return Layout("vae", "Wan original")
    if "decoder.mid_block.resnets.0.norm1.gamma" in keys or "post_quant_conv.weight" in keys:
        return Layout("vae", "diffusers")
    if "token_embedding.weight" in keys:
        return Layout("text_encoder", "Wan T5")
    if "shared.weight" in keys or "encoder.final_layer_norm.weight" in keys:
        return Layout("text_encoder", "transformers")
    return Layout("unknown", "unrecognised")


def expect_kind(path: Path, layout: Layout, kind: str) -> None:
    if layout.kind != kind:
        found = "an unrecognised file" if layout.kind == "unknown" else f"a {layout.kind} checkpoint ({layout.name})"
        raise WeightsError(f"{path}: expected a {kind} checkpoint but this is {found}")


def read_part(path: str | Path, kind: str, subfolder: str | None = None) -> tuple[Path, Mapping, Layout]:
    """Read one model part's file (or its `subfolder` of a diffusers folder) and check it is a `kind`."""
    path = Path(path)
    if subfolder and path.is_dir() and (path / subfolder).is_dir():
        path = path / subfolder
    tensors = read_checkpoint(path)
    layout = detect_layout(tensors)
    expect_kind(path, layout, kind)
    return path, tensors, layout


# ----------------------------------------------------------------------------------------------
# Strict assignment onto a model built on the meta device.
# ----------------------------------------------------------------------------------------------


def assign_weights(
    model: nn.Module,
    tensors: Mapping[str, torch.Tensor],
    *,
    source: Path,
    layout: str,
    device: torch.device,
    dtype: torch.dtype | None,
) -> nn.Module:
    """Check keys and shapes against `model`, then assign each tensor cast to `dtype` on `device`."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_keys_and_shapes(expected, {k: tensor_shape(tensors, k) for k in tensors}, source, layout)
    state = {}
    for key in expected:
        tensor = tensors[key]
        cast = dtype if (dtype is not None and tensor.is_floating_point()) else tensor.dtype
        state[key] = tensor.to(device=device, dtype=cast)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def check_keys_and_shapes(
    expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]], source: Path, layout: str
) -> None:
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    wrong = [f"{k} {list(found[k])} != {list(expected[k])}" for k in expected if k in found and found[k] != expected[k]]
    problems = []
    for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", wrong)):
        if keys:
            more = f" (+{len(keys) - SHOWN_KEYS} more)" if len(keys) > SHOWN_KEYS else ""
            problems.append(f"{len(keys)} {label}: {', '.join(keys[:SHOWN_KEYS])}{more}")
    if problems:
        raise WeightsError(f"{source} ({layout} layout) does not fit the model: " + "; ".join(problems))


# ----------------------------------------------------------------------------------------------
# Generator: three layouts onto the original Wan names.
# ----------------------------------------------------------------------------------------------

_WRAPPER_PREFIXES = re.compile(r"(^model\.)|(_fsdp_wrapped_module\.)|(_orig_mod\.)")


def strip_wrappers(key: str) -> str:
    """`model._fsdp_wrapped_module.blocks.0...` -> `blocks.0...` (LongLive's prefixes)."""
    return _WRAPPER_PREFIXES.sub("", key)


@lru_cache(maxsize=4)
def diffusers_to_wan_names(wan_keys: tuple[str, ...]) -> dict[str, str]:
    """Inverse of diffusers' Wan key mapping, built from diffusers' own converter, key by key."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    inverse = {}
    for key in wan_keys:
        (converted,) = convert_wan_transformer_to_diffusers({key: torch.empty(0)}).keys()
        inverse[converted] = key
    return inverse


class RenamedTensors(Mapping[str, torch.Tensor]):
    """A lazy view of `tensors` under new names (`names`: new -> old)."""

    def __init__(self, tensors: Mapping, names: Mapping[str, str]) -> None:
        self.tensors, self.names = tensors, dict(names)

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.tensors[self.names[key]]

    def __iter__(self):
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def shape(self, key: str) -> tuple[int, ...]:
        return tensor_shape(self.tensors, self.names[key])


def generator_tensors(path: str | Path, wan_keys: Iterable[str], use_ema: bool = False) -> tuple[Mapping, str]:
    """The generator weights of `path` under original Wan names, and the layout they came in."""
    path, tensors, layout = read_part(path, "generator", "transformer")
    if layout.name == "LongLive .pt":
        wanted = "generator_ema" if use_ema else "generator"
        if wanted not in tensors:
            raise WeightsError(f"{path}: has no '{wanted}' entry (it holds {sorted(tensors)}); check use_ema")
        tensors = tensors[wanted]
        layout = Layout("generator", f"LongLive .pt ['{wanted}']")
    names = {strip_wrappers(k): k for k in tensors}
    if "blocks.0.attn1.to_q.weight" in names:
        inverse = diffusers_to_wan_names(tuple(wan_keys))
        names = {inverse.get(k, k): old for k, old in names.items()}
    return RenamedTensors(tensors, names), layout.name


def load_generator(
    arch, path: str | Path, device: torch.device, dtype: torch.dtype, use_ema: bool = False
) -> nn.Module:
    """A `CausalWanModel` with the weights of `path` (any generator layout), on `device` in `dtype`."""
    from longlive.model import CausalWanModel

    with torch.device("meta"):
        model = CausalWanModel(arch)
    tensors, layout = generator_tensors(path, tuple(model.state_dict()), use_ema)
    return assign_weights(model, tensors, source=Path(path), layout=layout, device=device, dtype=dtype)


# ----------------------------------------------------------------------------------------------
# VAE: diffusers converts the original layout; a diffusers folder loads as it is.
# ----------------------------------------------------------------------------------------------


def vae_tensors(path: str | Path) -> tuple[Mapping, str]:
    """The VAE weights of `path` under diffusers' names, and the layout they came in."""
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    _, tensors, layout = read_part(path, "vae", "vae")
    if layout.name == "Wan original":
        return convert_wan_vae_to_diffusers(dict(tensors)), layout.name
    return tensors, layout.name


def vae_latent_stats(path: str | Path, z_dim: int) -> tuple[list[float] | None, list[float] | None]:
    """`latents_mean`, `latents_std` from a diffusers VAE folder's config.json; (None, None) without one.

    The published Wan VAE's config holds the library defaults; a VAE trained here (the demo model) holds
    its own, which the generator's latents are normalised with.
    """
    path = Path(path)
    folder = path / "vae" if (path / "vae").is_dir() else path
    config = folder / "config.json"
    if not (folder.is_dir() and config.is_file()):
        return None, None
    stats = json.loads(config.read_text())
    mean, std = stats.get("latents_mean"), stats.get("latents_std")
    for name, values in (("latents_mean", mean), ("latents_std", std)):
        if values is not None and len(values) != z_dim:
            raise WeightsError(f"{config}: {name} has {len(values)} values, the VAE has z_dim={z_dim}")
    return mean, std


def load_vae(arch, path: str | Path, device: torch.device, dtype: torch.dtype) -> nn.Module:
    from longlive.vae import build_vae

    with torch.device("meta"):
        vae = build_vae(arch, *vae_latent_stats(path, arch.z_dim))
    tensors, layout = vae_tensors(path)
    return assign_weights(vae, tensors, source=Path(path), layout=layout, device=device, dtype=dtype)


# ----------------------------------------------------------------------------------------------
# Text encoder: Wan's own T5 names -> transformers' UMT5 names (no library converts these).
# ----------------------------------------------------------------------------------------------

_WAN_T5_BLOCK_NAMES = {
    "norm1.weight": "layer.0.layer_norm.weight",
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",  # GELU branch
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",  # linear branch
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}


def wan_t5_to_transformers_name(key: str) -> str | None:
    """`blocks.3.attn.q.weight` -> `encoder.block.3.layer.0.SelfAttention.q.weight`; None if not Wan T5."""
    if key == "token_embedding.weight":
        return "shared.weight"
    if key == "norm.weight":
        return "encoder.final_layer_norm.weight"
    match = re.fullmatch(r"blocks\.(\d+)\.(.+)", key)
    if match and match.group(2) in _WAN_T5_BLOCK_NAMES:
        return f"encoder.block.{match.group(1)}.{_WAN_T5_BLOCK_NAMES[match.group(2)]}"
    return None


def text_encoder_tensors(path: str | Path) -> tuple[Mapping, str]:
    """UMT5 encoder weights under transformers' names (embed_tokens tied to shared)."""
    _, tensors, layout = read_part(path, "text_encoder", "text_encoder")
    if layout.name == "Wan T5":
        names = {wan_t5_to_transformers_name(k) or f"<unknown Wan T5 key> {k}": k for k in tensors}
    else:
        names = {k: k for k in tensors}
    if "shared.weight" in names:
        names.setdefault("encoder.embed_tokens.weight", names["shared.weight"])
    return RenamedTensors(tensors, names), layout.name


def load_text_encoder(arch, path: str | Path, device: torch.device, dtype: torch.dtype) -> nn.Module:
    from transformers import UMT5EncoderModel

    from longlive.text_encoder import umt5_config

    with torch.device("meta"):
        encoder = UMT5EncoderModel(umt5_config(arch))
    tensors, layout = text_encoder_tensors(path)
    encoder = assign_weights(encoder, tensors, source=Path(path), layout=layout, device=device, dtype=dtype)
    encoder.encoder.embed_tokens = encoder.shared  # one embedding, as transformers ties them
    return encoder
