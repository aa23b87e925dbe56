"""The redundant work of `parallel.split_decode` at a geometry: every part's decode FLOPs against one whole decode.

    python scripts/experiments/split_decode_work.py [--height 480 --width 832 --parts 2 3 4]

Counted, not timed: the published VAE is built on the meta device (no memory, no weights) and each
streamed decode (the first latent frame, then one steady-state frame) runs under torch's FlopCounterMode,
whole and as each part of the row split. Prints one JSON line per part count: the parts' FLOPs summed
over the whole decode's (1.0 would be no redundancy), the largest part's share (what bounds the
split decode's time), and each part's rows per stage (up blocks, head) from its `RowPlan`.
"""

from __future__ import annotations

import argparse
import json

import torch
from torch.utils.flop_counter import FlopCounterMode

from longlive.presets import PRESETS
from longlive.vae import StreamingVAE, build_vae
from longlive.vae_split import RowShare


def steady_flops(stream: StreamingVAE, latents: torch.Tensor) -> int:
    """FLOPs of decoding the second latent frame (the caches of the first in place: the steady state)."""
    stream.decode(latents[:, :1])
    with FlopCounterMode(display=False) as counter:
        stream.decode(latents[:, 1:2])
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--parts", type=int, nargs="+", default=[2, 3, 4])
    args = parser.parse_args()
    arch = PRESETS["Wan2.1-T2V-1.3B"].vae
    with torch.device("meta"):
        vae = build_vae(arch)
    scale = vae.config.scale_factor_spatial
    latent_hw = (args.height // scale, args.width // scale)
    latents = torch.zeros(1, 2, vae.config.z_dim, *latent_hw, device="meta")
    whole = steady_flops(StreamingVAE(vae), latents)
    for parts in args.parts:
        streams = [StreamingVAE(vae, RowShare(part, parts)) for part in range(parts)]
        flops = [steady_flops(stream, latents) for stream in streams]
        print(
            json.dumps(
                {
                    "latent_hw": latent_hw,
                    "parts": parts,
                    "whole_gflop": round(whole / 1e9, 1),
                    "sum_over_whole": round(sum(flops) / whole, 4),
                    "largest_part_over_whole": round(max(flops) / whole, 4),
                    "ideal_part_over_whole": round(1 / parts, 4),
                    "rows_per_stage": [list(s.row_plan(latent_hw[0]).computed_rows()) for s in streams],
                }
            )
        )


if __name__ == "__main__":
    main()
