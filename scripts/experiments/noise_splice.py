"""Which block's noise decides a long case? Roll it out again with some blocks' noise drawn from another seed.

    python scripts/experiments/noise_splice.py --world_seed 5001 --kind direction --from_blocks 72,81,84
    python scripts/experiments/noise_splice.py --world_seed 5001 --kind direction --only_blocks 81
    python scripts/experiments/noise_splice.py --noise_seed 1 --other_seed 0 --only_blocks 81

Prints one JSON line per rollout of `demo_eval.long_clips(seed=world_seed)`'s case of `--kind` (the test's
long cases), each judged as `test_demo_long_rollout` judges it (`long_measures`, `long_failures`): first the
rollout from `--noise_seed` alone, then one per splice. `--from_blocks S` draws the noise of every block from
latent frame S on from `--other_seed`; `--only_blocks S` that of the one block starting at S. Both generators
draw in lockstep, every denoising step of every block (`VideoConditionalPipeline._noise_like`), so the blocks
a splice leaves alone get exactly the draws they get without it. (`device=cuda` works too, but a seed draws
other noise on a GPU than on the CPU: another case than the CPU's.)

Issue 19, twelfth session (BENCHMARKS.md): the shipped weights fail seed 5001's direction case at noise seed 0
on the CPU. A fresh seed-1 generator from the switch (latent frame 81) on holds it, from 84 on not; seed 1's
draws for block 81 alone hold it, and so does seed 0's draw for block 81 with seed 1's noise everywhere else.
So that block's draw, from the state the earlier blocks leave, turns the shape short, and nothing later
brings it back.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence

import torch

from longlive import demo_eval
from longlive.config import load_config
from longlive.pipeline import Block, VideoConditionalPipeline, plan_blocks

KINDS = ("colour", "direction")  # the order of demo_eval.long_clips


def frame_list(text: str) -> list[int]:
    """'72,81' -> [72, 81]."""
    try:
        return [int(frame) for frame in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: latent frames as integers separated by commas") from None


def splice_noise(pipe: VideoConditionalPipeline, other_seed: int, takes: Callable[[Block], bool]) -> Callable[[], None]:
    """Make `pipe` draw each noise tensor from its rollout's generator and from `other_seed`'s alike, and use the
    other's where `takes(block)`; returns the function that undoes it."""
    other = torch.Generator(pipe.device).manual_seed(other_seed)
    own = pipe._noise_like

    def noise_like(block: Block, batch_size: int, rng: torch.Generator) -> torch.Tensor:
        mine, theirs = own(block, batch_size, rng), own(block, batch_size, other)
        return theirs if takes(block) else mine

    pipe._noise_like = noise_like
    return lambda: setattr(pipe, "_noise_like", own)


def generated_block_starts(pipe: VideoConditionalPipeline) -> list[int]:
    """The latent frames where the long rollout's generated blocks start."""
    conditioning = pipe.geometry.latents_for_video_frames(pipe.cfg.num_conditioning_frames)
    blocks = plan_blocks(conditioning, pipe.cfg.num_output_frames, pipe.geometry.frames_per_block)
    return [block.start for block in blocks if not block.conditioning]


def splices(from_blocks: Sequence[int], only_blocks: Sequence[int]) -> list[tuple[str, Callable[[Block], bool]]]:
    """(name, which blocks take the other seed's noise) for each splice asked for."""
    runs = [(f"from {start}", lambda block, start=start: block.start >= start) for start in from_blocks]
    return runs + [(f"only {start}", lambda block, start=start: block.start == start) for start in only_blocks]


def run_case(
    pipe: VideoConditionalPipeline, clip, reference: torch.Tensor, noise_seed: int, name: str = "alone"
) -> dict:
    """One rollout of the long case `clip` from `noise_seed`, measured against `reference`."""
    start = time.perf_counter()
    measures = demo_eval.long_case_measures(pipe, clip, reference, noise_seed)
    return {
        "splice": name,
        "worst_window_px": round(max(measures["windows"]), 2),
        "windows": [round(w, 2) for w in measures["windows"]],
        "failures": demo_eval.long_failures(measures),
        "seconds": round(time.perf_counter() - start, 1),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config_path", default="configs/demo_video_conditional.yaml")
    parser.add_argument("--world_seed", type=int, default=demo_eval.LONG_WORLD_SEED, help="whose long case")
    parser.add_argument("--kind", choices=KINDS, default="direction")
    parser.add_argument("--noise_seed", type=int, default=0, help="the rollout's own noise (the test's: 0)")
    parser.add_argument("--other_seed", type=int, default=1, help="the noise spliced in")
    parser.add_argument("--from_blocks", type=frame_list, default=[], help="latent frames S: every block from S")
    parser.add_argument("--only_blocks", type=frame_list, default=[], help="latent frames S: the block at S alone")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. wan_model_dir=/tmp/demo")
    args = parser.parse_args(argv)
    if args.other_seed == args.noise_seed:
        parser.error(f"--other_seed {args.other_seed}: the rollout's own seed; splicing it in changes nothing")
    cfg = load_config(args.config_path, [*args.overrides, f"num_output_frames={demo_eval.LONG_FRAMES}"])
    pipe = VideoConditionalPipeline.from_config(cfg)
    starts = generated_block_starts(pipe)
    for frame in (*args.from_blocks, *args.only_blocks):
        if frame not in starts:
            shown = ", ".join(map(str, starts[:2])) + (f", ... {starts[-1]}" if len(starts) > 2 else "")
            parser.error(f"latent frame {frame}: no generated block starts there (they start at {shown})")
    clip = demo_eval.long_clips(cfg.height, cfg.width, args.world_seed)[KINDS.index(args.kind)]
    reference = demo_eval.long_reference(pipe, clip)
    print(json.dumps(run_case(pipe, clip, reference, args.noise_seed)), flush=True)
    for name, takes in splices(args.from_blocks, args.only_blocks):
        undo = splice_noise(pipe, args.other_seed, takes)
        try:
            print(json.dumps(run_case(pipe, clip, reference, args.noise_seed, name)), flush=True)
        finally:
            undo()


if __name__ == "__main__":
    main()
