"""Write random-valued checkpoints in every published layout and size, to rehearse loading without downloads.

    python scripts/make_random_checkpoints.py OUT_DIR

OUT_DIR gets `wan_models/Wan2.1-T2V-1.3B/` (DiT safetensors, Wan2.1_VAE.pth, the bf16 T5 .pth and a
stand-in byte-level tokenizer in google/umt5-xxl/) and `longlive_models/models/` (longlive_base.pt with
generator and FSDP-prefixed EMA, lora.pt). Keys and shapes come from tests/layouts/, the published
manifests. About 30 GB; the output is noise.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from longlive.text_encoder import byte_level_tokenizer

LAYOUTS = Path(__file__).resolve().parents[1] / "tests" / "layouts"


def random_state(manifest: str, dtype: torch.dtype, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in json.loads((LAYOUTS / manifest).read_text()).items():
        is_scale = key.endswith(("norm.weight", "norm1.weight", "norm2.weight", "norm3.weight", "gamma"))
        is_scale |= key.endswith(("norm_q.weight", "norm_k.weight"))
        tensor = torch.ones(shape) if is_scale else torch.randn(shape, generator=generator) * 0.02
        state[key] = tensor.to(dtype)
    return state


def main(out: Path) -> None:
    wan, longlive = out / "wan_models" / "Wan2.1-T2V-1.3B", out / "longlive_models" / "models"
    wan.mkdir(parents=True, exist_ok=True)
    longlive.mkdir(parents=True, exist_ok=True)
    save_file(
        random_state("wan2.1_t2v_1.3b_dit.json", torch.float32, 0), str(wan / "diffusion_pytorch_model.safetensors")
    )
    torch.save(random_state("wan2.1_vae.json", torch.float32, 1), wan / "Wan2.1_VAE.pth")
    torch.save(random_state("wan2.1_umt5_xxl_encoder.json", torch.bfloat16, 2), wan / "models_t5_umt5-xxl-enc-bf16.pth")
    byte_level_tokenizer().save_pretrained(wan / "google" / "umt5-xxl")
    generator = random_state("longlive_generator.json", torch.float32, 3)
    ema = {k.replace("model.", "model._fsdp_wrapped_module.", 1): v for k, v in generator.items()}
    torch.save({"generator": generator, "generator_ema": ema}, longlive / "longlive_base.pt")
    lora = random_state("longlive_lora_rank256.json", torch.float32, 4)
    torch.save({"generator_lora": lora}, longlive / "lora.pt")
    for path in sorted(out.rglob("*")):
        if path.is_file():
            print(f"{path}  {path.stat().st_size / 2**30:.2f} GiB")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
