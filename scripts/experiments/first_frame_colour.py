"""Does the demo VAE keep the shape's colour in the first frame? Frame 0 against the later frames, per colour.

    python scripts/experiments/first_frame_colour.py --vae_dir demo_model/vae --clips 192

Issue 19 saw the first output frame of the demo model (the VAE's reconstruction of the first conditioning
frame) in the wrong colour in 26 of 96 runs. The causal VAE encodes video frame 0 alone into latent frame
0 and decodes that latent alone into frame 0 (`first_chunk`), so frame 0 goes through paths of the
encoder and decoder that no other frame takes. This script round-trips unseen demo-world clips of the
generator's length (`--latent_frames`, 45 video frames) through `longlive.vae.StreamingVAE` exactly as the
pipeline does (`longlive.demo_eval.vae_round_trip`), and prints, per colour, the share of frames whose
shape's dominant colour (`dominant_colours`) is the rendered one: frame 0 and frames 1.. apart.
`latent_probe` says whether latent frame 0 still tells the colours apart (a nearest-class-mean
classifier of the latent at the shape's cell, fitted on half the clips and scored on the other half):
if it does, a wrong frame 0 is the decoder's to fix (`train_demo.py --first_frame_weight`).

Clips: `DemoWorld(seed)` with train_demo's change mix (half change colour or direction at video frame 9);
the default seed 0 is no stream a training stage reads (seed 0 reads world seeds 1, 2, 3, ... and 1000).

Issue 19, CPU, 2026-12-01, 96 clips of the cell world, the shipped VAE (the eighth session's decoder stage):
frame 0 in its colour 0.79, every red one (20) read yellow, every other colour right; frames 1-44 0.999 of red
and all others. Before, CPU, 2026-11-30, the VAE of then: frame 0 in its colour 0.79 (red 0.48, green 0.83,
blue 0.96, yellow 0.92; 13 reds read yellow: the core comes back orange), frames 1-44 0.998. The
frame-0 latents do tell the colours apart (a small conv classifier on 2400 of them: 0.995 on 600 more;
this script's nearest-class-mean probe on one cell, 0.56, is a weak lower bound). Two CPU decoder fine-tunes with
`--decoder_mean` (136 steps of 4 45-frame clips, `--first_frame_weight 20 --vae_lr 1e-4`; 138 steps of 16
9-frame clips, `--first_frame_weight 8 --vae_lr 2e-4`) gave frame 0 0.71 and 0.74 (red 0.04 both, green
1.0, yellow 1.0) and frames 1-44 0.993 and 0.981: they traded red for yellow, and were not kept.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from longlive.demo_eval import vae_round_trip
from longlive.demo_world import COLOURS, Clip, DemoWorld, dominant_colours
from longlive.presets import PRESETS
from longlive.weights import load_vae


def colour_shares(vae, clips: list[Clip], frames_per_block: int = 3, batch: int = 16) -> dict:
    """Per colour (and "all"): the share of frame 0s and of later frames whose decoded shape has the
    rendered colour, with the counts; plus what the wrong frame 0s showed and `latent_probe`'s accuracy."""
    first: dict[str, list[bool]] = {c: [] for c in COLOURS}
    later: dict[str, list[bool]] = {c: [] for c in COLOURS}
    wrong: dict[str, int] = {}
    features, labels = [], []
    for start in range(0, len(clips), batch):
        group = clips[start : start + batch]
        latents, decoded = vae_round_trip(vae, torch.stack([c.video for c in group]), frames_per_block)
        for clip, latent, frames in zip(group, latents, decoded, strict=True):
            truth, seen = [state.colour for state in clip.trajectory()], dominant_colours(frames)
            first[truth[0]].append(seen[0] == truth[0])
            if seen[0] != truth[0]:
                key = f"{truth[0]}->{seen[0]}"
                wrong[key] = wrong.get(key, 0) + 1
            for t, s in zip(truth[1:], seen[1:], strict=True):
                later[t].append(s == t)
            features.append(shape_cell(latent[0], clip, vae.config.scale_factor_spatial))
            labels.append(truth[0])

    def share(values: dict[str, list[bool]]) -> dict:
        every = [v for vs in values.values() for v in vs]
        rows = {c: vs for c, vs in values.items()} | {"all": every}
        return {c: {"share": round(float(np.mean(vs)), 3) if vs else None, "n": len(vs)} for c, vs in rows.items()}

    return {
        "frame0": share(first),
        "later": share(later),
        "frame0_wrong": dict(sorted(wrong.items())),
        "latent_probe_accuracy": latent_probe(torch.stack(features), labels),
    }


def shape_cell(latent: torch.Tensor, clip: Clip, scale: int) -> torch.Tensor:
    """The latent [C] of latent frame 0 [C, h, w] at the cell holding the shape's centre in frame 0."""
    y, x = clip.scene.position
    return latent[:, min(int(y) // scale, latent.shape[1] - 1), min(int(x) // scale, latent.shape[2] - 1)]


def latent_probe(features: torch.Tensor, labels: list[str]) -> float | None:
    """Accuracy of a nearest-class-mean classifier of `features` [M, C] fitted on the even rows and scored on
    the odd ones: near 1, the latent holds the colour and a decoder can read it."""
    fit, score = features[0::2], features[1::2]
    fit_labels, score_labels = labels[0::2], labels[1::2]
    names = sorted(set(fit_labels))
    if len(score) == 0 or len(names) < 2:
        return None
    means = torch.stack([fit[[i for i, c in enumerate(fit_labels) if c == n]].mean(0) for n in names])  # [K, C]
    guess = [names[int(i)] for i in torch.cdist(score, means).argmin(1)]
    return round(float(np.mean([g == t for g, t in zip(guess, score_labels, strict=True)])), 3)


def unseen_clips(count: int, seed: int, latent_frames: int, change_prob: float = 0.5) -> list[Clip]:
    """`count` clips of `latent_frames` latent frames (4F - 3 video frames) from world seed `seed`."""
    world = DemoWorld(seed, num_frames=4 * latent_frames - 3, change_prob=change_prob)
    return [world.clip(i) for i in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vae_dir", default="demo_model/vae")
    parser.add_argument("--model_name", default="demo")
    parser.add_argument("--clips", type=int, default=192)
    parser.add_argument("--latent_frames", type=int, default=12, help="the generator's clip length (45 frames)")
    parser.add_argument("--frames_per_block", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="DemoWorld seed (0: no train_demo stage reads it)")
    args = parser.parse_args()
    vae = load_vae(PRESETS[args.model_name].vae, Path(args.vae_dir), torch.device("cpu"), torch.float32)
    clips = unseen_clips(args.clips, args.seed, args.latent_frames)
    report = colour_shares(vae, clips, args.frames_per_block)
    print(json.dumps({"settings": vars(args), **report}, indent=1))


if __name__ == "__main__":
    main()
