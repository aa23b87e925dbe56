"""Is the demo VAE fine at length? A streamed round trip of long demo-world clips, per 12 video frames.

    python scripts/experiments/vae_long_roundtrip.py --vae_dir demo_model/vae --latent_frames 100 --clips 6

Each clip (half of them changing colour or direction at a random frame) is encoded as the pipeline
encodes a video and decoded as it decodes a rollout (`longlive.demo_eval.vae_round_trip`); prints, per
window of 12 video frames, the mean distance (px) of the decoded shape's centroid from the rendered one
and the share of frames whose shape has the rendered colour. Issue 19, 2026-11-30, the
VAE shipped then (decoder trained on 45-frame clips), 6 clips of 397 frames: 0.4-0.7 px in every window, but
the colour in 0.82-1.0 of a window's frames: a red circle decoded green whenever it moved up or left
from about frame 55 on (its latents still told red from green), so the decoder needs longer clips
(`scripts/train_demo.py --stage decoder --num_latent_frames 36`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from longlive.demo_eval import vae_round_trip
from longlive.demo_world import dominant_colours, foreground_centroid, make_clip
from longlive.presets import PRESETS
from longlive.weights import load_vae

WINDOW = 12  # video frames per reported window (demo_eval.PATH_FRAMES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vae_dir", default="demo_model/vae")
    parser.add_argument("--model_name", default="demo")
    parser.add_argument("--latent_frames", type=int, default=100)
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--frames_per_block", type=int, default=3)
    parser.add_argument("--seed", type=int, default=777, help="clip seed (not one train_demo's world reads)")
    args = parser.parse_args()
    vae = load_vae(PRESETS[args.model_name].vae, Path(args.vae_dir), torch.device("cpu"), torch.float32)
    num_frames = 4 * args.latent_frames - 3
    errors, colours, clips = [], [], []
    for i in range(args.clips):
        rng = np.random.default_rng([args.seed, i])
        change_frame = int(rng.integers(9, max(10, num_frames - 40))) if i % 2 else None
        clip = make_clip(rng, num_frames, change_frame=change_frame)
        decoded = vae_round_trip(vae, clip.video[None], args.frames_per_block)[1][0]
        distance = (foreground_centroid(decoded) - foreground_centroid(clip.video)).norm(dim=1)
        truth = [state.colour for state in clip.trajectory()]
        right = torch.tensor([a == b for a, b in zip(dominant_colours(decoded), truth, strict=True)]).float()
        errors.append([float(w.nanmean()) for w in distance.split(WINDOW)])
        colours.append([float(w.mean()) for w in right.split(WINDOW)])
        clips.append({"prompt2": clip.prompt2, "colour_share": round(float(right.mean()), 3)})
    report = {
        "path_error_per_window": [round(float(v), 2) for v in np.nanmean(errors, axis=0)],
        "colour_share_per_window": [round(float(v), 2) for v in np.mean(colours, axis=0)],
        "clips": clips,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
