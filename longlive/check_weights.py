"""`longlive check-weights PATH...`: what each weights file is, its layout, and whether the engine can load it.

Only names and shapes are compared (against the preset's models built on the meta device), so checking
a multi-gigabyte file reads no weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from peft import get_peft_model, get_peft_model_state_dict
from transformers import UMT5EncoderModel

from longlive.lora import lora_config, lora_rank, read_lora
from longlive.model import CausalWanModel
from longlive.presets import PRESETS
from longlive.text_encoder import umt5_config
from longlive.vae import build_vae
from longlive.weights import (
    WeightsError,
    check_keys_and_shapes,
    detect_layout,
    generator_tensors,
    read_checkpoint,
    tensor_shape,
    text_encoder_tensors,
    vae_tensors,
)


@dataclass
class CheckResult:
    path: Path
    kind: str
    layout: str
    num_tensors: int
    error: str | None

    def line(self) -> str:
        verdict = "loadable" if self.error is None else f"NOT loadable: {self.error}"
        return f"{self.path}: {self.kind}, {self.layout} layout, {self.num_tensors} tensors: {verdict}"


def _shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _check_against(model: torch.nn.Module, tensors, path: Path, layout: str) -> None:
    check_keys_and_shapes(_shapes(model), {k: tensor_shape(tensors, k) for k in tensors}, path, layout)


def check_file(path: str | Path, model_name: str = "Wan2.1-T2V-1.3B", use_ema: bool = False) -> CheckResult:
    """Tell what `path` is and whether it fits the `model_name` preset."""
    path, preset = Path(path), PRESETS[model_name]
    kind, layout, count = "unknown", "unrecognised", 0
    try:
        probe = read_checkpoint(path / "transformer" if (path / "transformer").is_dir() else path)
        found = detect_layout(probe)
        kind, layout, count = found.kind, found.name, len(probe)
        with torch.device("meta"):
            if kind == "generator":
                model = CausalWanModel(preset.generator)
                tensors, layout = generator_tensors(path, tuple(model.state_dict()), use_ema)
                count = len(tensors)
                _check_against(model, tensors, path, layout)
            elif kind == "vae":
                tensors, layout = vae_tensors(path)
                _check_against(build_vae(preset.vae), tensors, path, layout)
            elif kind == "text_encoder":
                tensors, layout = text_encoder_tensors(path)
                _check_against(UMT5EncoderModel(umt5_config(preset.text_encoder)), tensors, path, layout)
            elif kind == "lora":
                state = read_lora(path)
                count, generator = len(state), CausalWanModel(preset.generator)
                peft_model = get_peft_model(generator, lora_config(generator, lora_rank(state), lora_rank(state), 0.0))
                expected = {k: tuple(v.shape) for k, v in get_peft_model_state_dict(peft_model).items()}
                check_keys_and_shapes(expected, {k: tuple(v.shape) for k, v in state.items()}, path, layout)
                layout = f"{layout}, rank {lora_rank(state)}"
            else:
                raise WeightsError("not a generator, VAE, text encoder or LoRA checkpoint")
    except WeightsError as err:
        return CheckResult(path, kind, layout, count, str(err))
    return CheckResult(path, kind, layout, count, None)
