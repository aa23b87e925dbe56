"""Average the generator and text encoder of several trained demo models (a weight soup, issue 19).

    python scripts/experiments/average_demo_weights.py /tmp/demo_PQ /tmp/demo_P /tmp/demo_Q

Writes a copy of the first model's folder (its VAE and tokenizer as they are) with the generator's and the
text encoder's tensors replaced by their element-wise means over the models. Meant for runs fine-tuned from
one parent (their weights in one basin): BENCHMARKS.md, 2026-11-30 (seventh session), has what it did.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

AVERAGED = ("transformer/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors")


def average(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean (in float64) of floating tensors with the same keys and shapes; others from the first."""
    keys = set(states[0])
    for state in states[1:]:
        if set(state) != keys or any(state[k].shape != states[0][k].shape for k in keys):
            raise SystemExit("the models differ in their tensors: only models of one architecture can be averaged")
    return {
        k: (sum(s[k].double() for s in states) / len(states)).to(v.dtype) if v.is_floating_point() else v
        for k, v in states[0].items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir")
    parser.add_argument("model_dirs", nargs="+", help="demo model folders (train_demo.py --output_dir)")
    args = parser.parse_args()
    sources = [Path(d) for d in args.model_dirs]
    missing = [str(s / rel) for s in sources for rel in AVERAGED if not (s / rel).is_file()]
    if len(sources) < 2 or missing:
        raise SystemExit(f"need two or more trained demo models; missing: {', '.join(missing) or 'a second model'}")
    out = Path(args.output_dir)
    if out.exists():
        raise SystemExit(f"{out} exists: give a new folder")
    shutil.copytree(sources[0], out)
    for rel in AVERAGED:
        save_file(average([load_file(s / rel) for s in sources]), out / rel, metadata={"format": "pt"})
    print(f"{out}: the mean of {', '.join(map(str, sources))}")


if __name__ == "__main__":
    main()
