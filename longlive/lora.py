"""LongLive's LoRA through peft: every `nn.Linear` inside the transformer blocks, loaded from `lora_ckpt`.

The file is `{"generator_lora": state_dict}` or the bare peft state dict (keys
`base_model.model.blocks.N....lora_A.weight`). Merging folds the adapter into the base weights, so
inference runs at the base model's speed with the adapter's output.
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from torch import nn

from longlive.weights import WeightsError, check_keys_and_shapes, read_part, tensor_shape


def lora_target_modules(model: nn.Module) -> list[str]:
    """Names of every `nn.Linear` inside `model.blocks`, as LongLive targets them."""
    return [f"blocks.{name}" for name, module in model.blocks.named_modules() if isinstance(module, nn.Linear)]


def lora_config(model: nn.Module, rank: int, alpha: float, dropout: float) -> LoraConfig:
    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=lora_target_modules(model))


def read_lora(path: str | Path) -> dict[str, torch.Tensor]:
    """The peft state dict of a LoRA file, with or without LongLive's `generator_lora` wrapper."""
    _, tensors, _ = read_part(path, "lora")
    return dict(tensors["generator_lora"] if "generator_lora" in tensors else tensors)


def lora_rank(state: dict[str, torch.Tensor]) -> int:
    first = next(k for k in state if "lora_A" in k)
    return state[first].shape[0]


def apply_lora(
    model: nn.Module,
    path: str | Path,
    rank: int,
    alpha: float,
    dropout: float = 0.0,
    dtype: torch.dtype | None = None,
    merge: bool = True,
) -> nn.Module:
    """Wrap `model` with the LoRA of `path` (strictly loaded); merged into the base weights if `merge`."""
    path = Path(path)
    state = read_lora(path)
    found_rank = lora_rank(state)
    if found_rank != rank:
        raise WeightsError(f"{path}: a LoRA of rank {found_rank}, but adapter.rank is {rank}")
    peft_model = get_peft_model(model, lora_config(model, rank, alpha, dropout))
    expected = {k: tuple(v.shape) for k, v in get_peft_model_state_dict(peft_model).items()}
    check_keys_and_shapes(expected, {k: tensor_shape(state, k) for k in state}, path, "peft LoRA")
    device = next(model.parameters()).device
    set_peft_model_state_dict(peft_model, {k: v.to(device=device, dtype=dtype or v.dtype) for k, v in state.items()})
    if merge:
        return peft_model.merge_and_unload()
    return peft_model.base_model.model
