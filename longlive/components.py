"""Build the generator, VAE and text encoder a config names.

Published weights come from local files (`wan_model_dir`, `generator_ckpt`, `lora_ckpt`); with none
named, each part is built at the preset's size with seeded random weights, directly on the device
(tiny tests, speed runs). Every choice is logged with the file and the layout it was read in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from omegaconf import DictConfig
from transformers import AutoTokenizer, UMT5EncoderModel

from longlive.config import AdapterConfig, torch_dtype
from longlive.ffn import fuse_ffn_gelu
from longlive.fp8 import check_fp8_support, convert_block_linears
from longlive.lora import apply_lora, lora_target_modules
from longlive.model import CausalWanModel, random_model
from longlive.presets import model_preset
from longlive.startup import PHASES
from longlive.text_encoder import PromptEncoder, byte_level_tokenizer, umt5_config
from longlive.vae import StreamingVAE, build_vae, compile_decoder
from longlive.vae_convs import fold_causal_convs
from longlive.vae_norms import fuse_vae_norms
from longlive.vae_split import compile_stages
from longlive.weights import SAFETENSORS, WeightsError, load_generator, load_text_encoder, load_vae

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WanFiles:
    """Where each part of Wan2.1-T2V-1.3B lies in a model folder."""

    layout: str
    generator: Path
    vae: Path
    text_encoder: Path
    tokenizer: Path


def locate_wan_files(folder: str | Path) -> WanFiles:
    """Find the parts in Wan's original folder or in the diffusers one."""
    folder = Path(folder)
    if not folder.is_dir():
        raise WeightsError(f"wan_model_dir not found: {folder}")
    if (folder / "transformer").is_dir():
        parts = ("transformer", "vae", "text_encoder", "tokenizer")
        files = WanFiles("diffusers", *(folder / p for p in parts))
    else:
        parts = ("diffusion_pytorch_model.safetensors", "Wan2.1_VAE.pth", "models_t5_umt5-xxl-enc-bf16.pth")
        files = WanFiles("Wan original", *(folder / p for p in parts), folder / "google" / "umt5-xxl")
        if not files.generator.exists() and (folder / f"{SAFETENSORS}.index.json").is_file():
            files = replace(files, generator=folder)  # sharded (the 14B): the loader follows the index
    for path in (files.generator, files.vae, files.text_encoder, files.tokenizer):
        if not path.exists():
            raise WeightsError(f"wan_model_dir {folder} ({files.layout} layout) lacks {path.name}: see README")
    return files


def build_generator(cfg: DictConfig, device: torch.device) -> CausalWanModel:
    arch, dtype = model_preset(cfg).generator, torch_dtype(cfg.dtype)
    source = cfg.generator_ckpt or (locate_wan_files(cfg.wan_model_dir).generator if cfg.wan_model_dir else None)
    if source is None:
        logger.warning("generator: random weights (no generator_ckpt or wan_model_dir)")
        with PHASES.phase("generator: random weights", device):
            model = random_model(arch, device, dtype, cfg.seed)
    else:
        with PHASES.phase("generator: load", device):
            model = load_generator(arch, source, device, dtype, use_ema=cfg.use_ema)
        logger.info("generator: %s%s", source, " (EMA)" if cfg.use_ema else "")
    with PHASES.phase("generator: adapt", device):
        return _adapt_generator(cfg, model, device, dtype).eval().requires_grad_(False)


def _adapt_generator(
    cfg: DictConfig, model: CausalWanModel, device: torch.device, dtype: torch.dtype
) -> CausalWanModel:
    """The config's changes to a built generator: LoRA, float8 linears, the fused FFN GELU."""
    if cfg.lora_ckpt:
        adapter = cfg.adapter or AdapterConfig()
        lora_dtype = torch_dtype(adapter.dtype)
        if adapter.verbose:  # LongLive's switch: list every linear layer the LoRA adapts
            targets = lora_target_modules(model)
            logger.info("LoRA targets %d linear layers: %s", len(targets), ", ".join(targets))
        model = apply_lora(
            model, cfg.lora_ckpt, adapter.rank, adapter.alpha, adapter.dropout, lora_dtype, cfg.merge_lora
        )
        logger.info("LoRA: %s (rank %d, %s)", cfg.lora_ckpt, adapter.rank, "merged" if cfg.merge_lora else "unmerged")
    if cfg.fp8_linears:  # it quantizes the final (loaded, LoRA-merged) weights
        check_fp8_support(device, dtype)
        logger.info("generator: %d linear layers in float8", convert_block_linears(model.blocks))
    if cfg.fuse_ffn_gelu:
        fused = fuse_ffn_gelu(model.blocks)
        if fused < len(model.blocks):
            logger.warning(
                "fuse_ffn_gelu: %d of %d FFNs fused; the others start with a float8 (fp8_linears) or unmerged "
                "LoRA layer, which has no GELU epilogue",
                fused,
                len(model.blocks),
            )
        else:
            logger.info("generator: %d FFNs with the GELU in their first product", fused)
    return model


def build_streaming_vae(cfg: DictConfig, device: torch.device) -> StreamingVAE:
    arch, dtype = model_preset(cfg).vae, torch_dtype(cfg.dtype)
    if cfg.wan_model_dir:
        path = locate_wan_files(cfg.wan_model_dir).vae
        with PHASES.phase("VAE: load", device):
            vae = load_vae(arch, path, device, dtype)
        logger.info("VAE: %s", path)
    else:
        logger.warning("VAE: random weights (no wan_model_dir)")
        with PHASES.phase("VAE: random weights", device):
            torch.manual_seed(cfg.seed)
            with device:
                vae = build_vae(arch)
            vae = vae.to(dtype)
    with PHASES.phase("VAE: adapt", device):
        if cfg.fold_vae_convs:
            logger.info("VAE: %d causal convolutions folded into 2D ones", fold_causal_convs(vae))
        if cfg.fuse_vae_norms:
            logger.info("VAE: %d RMS norms fused", fuse_vae_norms(vae))
        if cfg.compile_vae:
            if cfg.parallel.split_decode and cfg.parallel.sequence > 1:  # the split decode calls the stages
                compile_stages(vae.decoder)
            else:
                compile_decoder(vae)
            logger.info("VAE: decoder compiled on first use (static shapes)")
        return StreamingVAE(vae)


def build_prompt_encoder(cfg: DictConfig, device: torch.device) -> PromptEncoder:
    preset, dtype = model_preset(cfg), torch_dtype(cfg.dtype)
    text_len = preset.generator.text_len
    if cfg.wan_model_dir:
        files = locate_wan_files(cfg.wan_model_dir)
        with PHASES.phase("text encoder: load", device):
            encoder = load_text_encoder(preset.text_encoder, files.text_encoder, device, dtype)
        tokenizer = AutoTokenizer.from_pretrained(files.tokenizer, local_files_only=True)
        logger.info("text encoder: %s, tokenizer: %s", files.text_encoder, files.tokenizer)
    else:
        logger.warning("text encoder: random weights, byte-level tokenizer (no wan_model_dir)")
        with PHASES.phase("text encoder: random weights", device):
            torch.manual_seed(cfg.seed)
            with device:
                encoder = UMT5EncoderModel(umt5_config(preset.text_encoder))
            encoder = encoder.to(dtype)
        tokenizer = byte_level_tokenizer()
    return PromptEncoder(tokenizer, encoder, text_len, device)
