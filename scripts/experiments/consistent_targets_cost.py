"""How short can `train_demo.consistent_targets`' decode and encode be? (issue 19; CPU, shipped demo VAE)

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python scripts/experiments/consistent_targets_cost.py --part decode
    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python scripts/experiments/consistent_targets_cost.py --part encode
    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python scripts/experiments/consistent_targets_cost.py --part profile

`--rollout_targets consistent` decoded the whole sampled context to read one frame's centroid and encoded
the whole re-rendered clip to keep the latents after the context: 1.8 s a rollout step on an H200 at batch
64 (the causal VAE's frame loops are launch-bound there). The causal VAE's caches hold two frames a
convolution, so an output depends on a window of the past whose weight fades; this measures how much.

- decode: the last context frame decoded from only the last m latent frames (cold cache, the first of
  them a first chunk) vs the whole context: centroid distance (px), and whether a shape is found in both.
  Contexts: true clip latents (36-latent-frame clips of the generator stage's world, one random block
  boundary 6..33 each) and contexts sampled by the shipped generator (`rollout_context`, 11 blocks).
- encode: re-rendered clips (`shifted_continuation`, offsets uniform in +-3 px) encoded from W latent
  frames before the context's end (cold cache) vs whole: the target latents' relative L2 and max |diff|,
  and the first 6 target latent frames decoded after the same (true) context: centroid distance and
  colour of both, next to the VAE's own round-trip error (full encode decoded vs the rendered frames).
- profile: CPU seconds of one `consistent_targets` call at batch 16 (1 thread), the reference paths
  (whole decode and encode) vs the defaults, the same inputs, with cProfile's cumulative time per part.

Measured 2026-11-30, CPU, the shipped demo VAE, seed 7:
- decode, max (mean) centroid distance px, 32 true contexts | 16 sampled (contexts longer than m only):
  m=1 31.8 (5.0) | 12.0 (2.4); 2: 3.25 (1.13) | 2.41 (1.05); 3: 1.42 (0.68) | 1.72 (0.72);
  4: 1.61 (0.71) | 1.69 (0.69); 6: 1.18 (0.33) | 1.21 (0.34); 9: 1.22 (0.30) | 0.93 (0.17);
  12: 1.04 (0.23) | 0.91 (0.18); 18: 0.25 (0.07) | 0.27 (0.03); 20: 0.148 (0.016) | 0.025 (0.002);
  22: 0.034 (0.007) | 0 (0); 24: 0 | 0. A shape was found in the same contexts every time. The
  decoder's reach is about 24 latent frames (max |pixel| difference 0.18 at 22, 0.009 at 24, one clip):
  m = 22 is the smallest within 0.1 px, and saves only contexts of 24-33 latent frames.
- encode, 32 clips, contexts 9/15/21/27 (8 each; a warm-up reaching the clip's start is the whole encode):
  W=1: rel L2 0.27 mean, 0.50 max; max |diff| 4.4; decoded 0.53 px mean, 3.7 max; colour differs 106/768
  W=2: 0.21, 0.41; 2.3; 0.39, 1.77; 26.  W=3: 0.13, 0.27; 2.2; 0.30, 1.62; 28.
  W=6: 0.031, 0.070; 0.77; 0.057, 0.31; 3.  W=9: 0.0039, 0.014; 0.14; 0.011, 0.14; 0.
  W=12: 0.0005, 0.0015; 0.019; 0.0015, 0.046; 0.
  The VAE's own round trip on those frames: 0.65 px mean, 3.6 max, colour differs 113/768. W = 9 is far
  inside it (and no colour changes): 30% fewer latent frames encoded on average.
- profile, batch 16, 1 thread, CPU seconds whole -> shortcut (m 22, W 9): context 21: 44.2 -> 36.9
  (decode 22.1 -> 22.2, encode 21.9 -> 14.6); context 30: 55.1 -> 32.1 (decode 32.9 -> 23.4, encode
  22.0 -> 8.6); targets 0.4% / 0.7% apart (relative L2). Re-rendering (`shifted_continuation`,
  `rasterize`, `paint`) and the centroids: 0.2 s, under 0.5%; the VAE is everything else. Over contexts
  6..33 (equally likely) that is about 42 -> 33 s a rollout step at batch 16.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import time
from pathlib import Path

import numpy as np
import torch

from longlive.demo_world import dominant_colours, foreground_centroid, paint, rasterize
from longlive.presets import PRESETS
from longlive.vae import StreamingVAE
from longlive.weights import load_vae
from tests.conftest import script_module

train_demo = script_module("scripts/train_demo.py")

CLIP_LATENTS = 36  # the generator stage's clips (--clip_latent_frames 36)
DECODED_TARGETS = 6  # target latent frames decoded per warm-up (a cold start's error is largest first)


def config(args: argparse.Namespace) -> train_demo.TrainConfig:
    return train_demo.TrainConfig(
        output_dir=args.model_dir, device="cpu", seed=args.seed, clip_latent_frames=CLIP_LATENTS, change_prob=0.7
    )


def clips_and_latents(vae, cfg: train_demo.TrainConfig, count: int) -> tuple:
    """The world's first `count` clips: their world, stories and whole-clip latents [count, 36, C, h, w]."""
    world = train_demo.world(cfg, stream=2, num_frames=4 * CLIP_LATENTS - 3)
    videos, _ = world.batch(0, count)
    return world, [world.story(i) for i in range(count)], train_demo.encode_latents(vae, videos)


def centroids(frames: torch.Tensor) -> torch.Tensor:
    """Frames [B, 3, H, W] -> foreground centroids [B, 2] (NaN: no shape)."""
    return foreground_centroid(frames.transpose(0, 1))


def decode_errors(vae, latents: torch.Tensor, contexts: list[int], lengths: tuple[int, ...]) -> dict:
    """Per m, the centroid distance of clip b's last context frame decoded from its last m latent frames
    vs from the whole context (`contexts[b]` latent frames of `latents` [B, F, C, h, w])."""
    whole = StreamingVAE(vae).decode(latents[:, : max(contexts)])  # causal: frame 4c-4 is context c's last
    reference = centroids(torch.stack([whole[b, :, 4 * c - 4] for b, c in enumerate(contexts)]))
    out = {}
    for m in lengths:
        cut = [b for b, c in enumerate(contexts) if c > m]  # a context of m or fewer is decoded whole anyway
        short = torch.stack([latents[b, contexts[b] - m : contexts[b]] for b in cut])
        at = centroids(StreamingVAE(vae).decode(short)[:, :, -1])
        distance = (at - reference[cut]).norm(dim=1)
        both = ~distance.isnan()
        out[m] = {
            "contexts": len(cut),
            "mean_px": round(float(distance[both].mean()), 4),
            "max_px": round(float(distance[both].max()), 4),
            "found_differs": int((reference[cut].isnan().any(1) != at.isnan().any(1)).sum()),
        }
    out["shapes_found"] = int((~reference.isnan().any(1)).sum())
    return out


def part_decode(args: argparse.Namespace) -> dict:
    cfg = config(args)
    models = train_demo.build_models(cfg, torch.device("cpu"))
    models.vae = load_vae(models.preset.vae, Path(args.model_dir) / "vae", torch.device("cpu"), torch.float32)
    world, _, latents = clips_and_latents(models.vae, cfg, args.clips)
    rng = np.random.default_rng(args.seed)
    boundaries = list(range(6, 34, 3))  # rollout contexts: blocks 0..k-1 for k in 2..11
    contexts = [int(rng.choice(boundaries)) for _ in range(args.clips)]
    report = {"true": decode_errors(models.vae, latents, contexts, tuple(args.decode_latents))}
    train_demo.resume_generator(models, Path(args.model_dir), torch.device("cpu"))
    count = args.sampled_clips
    captions = [world[i][1] for i in range(count)]
    text = train_demo.encode_text(models.text_encoder, models.tokenizer, captions, models.preset.generator.text_len)
    sampled = train_demo.rollout_context(
        models.generator.eval(), latents[:count], text, cfg, 11, torch.Generator().manual_seed(args.seed)
    )
    contexts = [int(c) for c in rng.choice(boundaries[1:], size=2 * count)]  # 2 contexts a clip
    report["sampled"] = decode_errors(models.vae, torch.cat([sampled, sampled]), contexts, tuple(args.decode_latents))
    return report


def after_context(vae, context: torch.Tensor):
    """A function decoding the first `DECODED_TARGETS` latent frames after `context` [B, c, C, h, w], each
    call from the decoder's cache after that context (decoded once)."""
    decoder = StreamingVAE(vae)
    decoder.decode(context)
    cache, count = list(decoder._decoder_cache), decoder._decoded_latents

    def decode(latents: torch.Tensor) -> torch.Tensor:
        decoder._decoder_cache, decoder._decoded_latents = list(cache), count  # entries are replaced, not changed
        return decoder.decode(latents[:, :DECODED_TARGETS])  # [B, 3, 4 * DECODED_TARGETS, H, W]

    return decode


def part_encode(args: argparse.Namespace) -> dict:
    cfg = config(args)
    vae = load_vae(PRESETS["demo"].vae, Path(args.model_dir) / "vae", torch.device("cpu"), torch.float32)
    rng = np.random.default_rng(args.seed)
    world = train_demo.world(cfg, stream=2, num_frames=4 * CLIP_LATENTS - 3)
    num_frames, groups = 4 * CLIP_LATENTS - 3, (9, 15, 21, 27)  # contexts, args.clips // 4 clips each
    rows: dict = {w: {"rel_l2": [], "max_abs": [], "px": [], "colour_differs": 0} for w in args.warmups}
    round_trip_px, round_trip_colour, frames_compared = [], 0, 0
    for g, context in enumerate(groups):
        indices = range(g * args.clips // 4, (g + 1) * args.clips // 4)
        videos = torch.stack(
            [
                paint(
                    *rasterize(
                        train_demo.shifted_continuation(
                            *world.story(i), num_frames, 64, 64, rng.uniform(-3, 3, 2).tolist(), 4 * context - 4
                        ),
                        64,
                        64,
                    )
                )
                for i in indices
            ]
        )
        whole = train_demo.encode_latents(vae, videos)  # [b, 36, C, h, w]
        targets = whole[:, context:]
        decode_targets = after_context(vae, whole[:, :context])
        reference = decode_targets(targets)
        first = 4 * context - 3
        rendered = videos[:, :, first : first + 4 * DECODED_TARGETS]
        for b in range(len(indices)):
            round_trip_px += (foreground_centroid(reference[b]) - foreground_centroid(rendered[b])).norm(dim=1).tolist()
            round_trip_colour += sum(
                a != t for a, t in zip(dominant_colours(reference[b]), dominant_colours(rendered[b]), strict=True)
            )
            frames_compared += reference.shape[2]
        for w in args.warmups:
            start = train_demo.warmup_start(context, w, 4)
            cold = train_demo.encode_latents(vae, videos[:, :, start:])[:, context - CLIP_LATENTS :]
            diff = cold - targets
            rows[w]["rel_l2"] += (diff.flatten(1).norm(dim=1) / targets.flatten(1).norm(dim=1)).tolist()
            rows[w]["max_abs"].append(float(diff.abs().max()))
            decoded = decode_targets(cold)
            for b in range(len(indices)):
                distance = foreground_centroid(decoded[b]) - foreground_centroid(reference[b])
                rows[w]["px"] += distance.norm(dim=1).tolist()
                rows[w]["colour_differs"] += sum(
                    a != r for a, r in zip(dominant_colours(decoded[b]), dominant_colours(reference[b]), strict=True)
                )
        print(f"context {context} done", flush=True)
    report = {
        "round_trip": {
            "mean_px": round(float(np.nanmean(round_trip_px)), 4),
            "max_px": round(float(np.nanmax(round_trip_px)), 4),
            "colour_differs": round_trip_colour,
            "frames": frames_compared,
        }
    }
    for w, row in rows.items():
        report[f"warmup_{w}"] = {
            "rel_l2_mean": round(float(np.mean(row["rel_l2"])), 5),
            "rel_l2_max": round(float(np.max(row["rel_l2"])), 5),
            "max_abs": round(float(np.max(row["max_abs"])), 4),
            "mean_px": round(float(np.nanmean(row["px"])), 4),
            "max_px": round(float(np.nanmax(row["px"])), 4),
            "colour_differs": row["colour_differs"],
        }
    return report


PARTS = ("context_end_frames", "shifted_continuation", "rasterize", "paint", "encode_latents", "foreground_centroid")


def part_profile(args: argparse.Namespace) -> dict:
    """CPU seconds of `consistent_targets` at batch 16, per part (cProfile's cumulative time of `PARTS`)."""
    cfg = config(args)
    vae = load_vae(PRESETS["demo"].vae, Path(args.model_dir) / "vae", torch.device("cpu"), torch.float32)
    _, stories, latents = clips_and_latents(vae, cfg, 16)
    report = {}
    for context in (21, 30):  # the clips' own latents as the context; 6..33 are equally likely in training
        outs = {}
        for name, settings in (("whole", dict(decode_latents=None, warmup_latents=None)), ("shortcut", {})):
            profile = cProfile.Profile()
            began = time.process_time()
            profile.enable()
            outs[name], found = train_demo.consistent_targets(vae, latents, context, stories, **settings)
            profile.disable()
            seconds = time.process_time() - began
            split = {part: 0.0 for part in PARTS}
            for (_, _, function), (_, _, _, cumulative, _) in pstats.Stats(profile).stats.items():
                if function in split:
                    split[function] += cumulative
            report[f"context_{context}_{name}"] = {
                "cpu_s": round(seconds, 2),
                "found": int(found.sum()),
                "split_s": {part: round(value, 3) for part, value in split.items()},
            }
            print(json.dumps(report), flush=True)
        difference = (outs["shortcut"] - outs["whole"])[:, context:]
        report[f"context_{context}_targets_rel_l2"] = round(float(difference.norm() / latents[:, context:].norm()), 5)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("decode", "encode", "profile"), required=True)
    parser.add_argument("--model_dir", default="demo_model")
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--decode_latents", type=int, nargs="+", default=[1, 2, 3, 4, 6, 9, 12, 18, 20, 22, 24])
    parser.add_argument("--warmups", type=int, nargs="+", default=[1, 2, 3, 6, 9, 12])
    parser.add_argument("--sampled_clips", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7, help="world seed (7: no stage of the shipped model read it)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    report = {"decode": part_decode, "encode": part_encode, "profile": part_profile}[args.part](args)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
