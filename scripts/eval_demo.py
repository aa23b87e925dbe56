"""Measure a demo model over random demo-world clips and print one JSON report (longlive.demo_eval).

    python scripts/eval_demo.py --config_path configs/demo_video_conditional.yaml --clips 18
    python scripts/eval_demo.py --config_path configs/demo_video_conditional.yaml wan_model_dir=/tmp/demo
    python scripts/eval_demo.py --clips 12 --latent_frames 100     # long rollouts: where does it break?
    python scripts/eval_demo.py --long   # test_demo_long_rollout's cases
    python scripts/eval_demo.py --long --long_seeds 5000,5001,5002
    python scripts/eval_demo.py --long --long_seeds 5000,5001 --long_noise_seeds 1,2,3 device=cuda

For each kind of clip (continued, changing colour, changing direction at the first generated frame) and
with and without the conditioning frames: the mean path error (px), velocity error (px/frame), and the
share of frames in the expected colour in the first generated block and after it, and the path error
of every 12 generated frames in turn (`path_error_per_window`; `--latent_frames` makes the rollouts
longer than the config's `num_output_frames`, conditioning included). Then `speed_ratio`, the generated
speed over the true one per world speed (`--speed_clips` clips a speed; 0 skips it), and with `--long`,
`long`: what `test_demo_long_rollout` bounds, on its two 397-frame cases, with the bounds each misses
(`demo_eval.evaluate_long`, `long_failures`; `device=cuda` runs them in seconds). Two clips are a thin
sample: weights picked because they pass them can fail most others (BENCHMARKS.md, 2026-11-30, seventh
session), so `--long_seeds` adds the same two cases from other unseen world streams (`long_seeds`, and
`long_held`: how many of all the long cases held every bound). Seeds from 5000 up are safe: train_demo.py
with seed 0 reads streams 1, 2, ... (one per generator run) and 1000. Each case is also one draw of the
initial noise (seed 0, the test's): `--long_noise_seeds` rolls every case out again from other draws
(`long_noise_seeds`, by noise seed, then world seed; counted in `long_held`): a case that fails at one draw
may hold at most others (BENCHMARKS.md, twelfth session), and the same noise seed on a GPU is another draw
again. Run it before and after more training (`scripts/train_demo.py
--resume`) to see what the training bought.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence

from longlive.config import load_config
from longlive.demo_eval import (
    LONG_FRAMES,
    LONG_WORLD_SEED,
    evaluate,
    evaluate_long,
    long_references,
    speed_ratios,
)
from longlive.pipeline import VideoConditionalPipeline


def seed_list(text: str) -> list[int]:
    """'5000,5001' -> [5000, 5001]."""
    try:
        return [int(seed) for seed in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: seeds as integers separated by commas") from None


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config_path", default="configs/demo_video_conditional.yaml")
    parser.add_argument("--clips", type=int, default=18, help="random clips (a third of each kind)")
    parser.add_argument("--seed", type=int, default=0, help="which random clips")
    parser.add_argument(
        "--latent_frames", type=int, default=None, help="latent frames per rollout (default: num_output_frames)"
    )
    parser.add_argument("--speed_clips", type=int, default=6, help="clips a world speed for speed_ratio (0: none)")
    parser.add_argument("--long", action="store_true", help=f"also the long cases ({LONG_FRAMES} latent frames)")
    parser.add_argument(
        "--long_seeds", type=seed_list, default=[], help="with --long: the cases of these world seeds too (5000,5001)"
    )
    parser.add_argument(
        "--long_noise_seeds",
        type=seed_list,
        default=[],
        help="with --long: every long case again from the noise of these seeds (1,2,3; `long` is seed 0's)",
    )
    parser.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. wan_model_dir=/tmp/demo")
    args = parser.parse_args(argv)
    for given in ("long_seeds", "long_noise_seeds"):
        if getattr(args, given) and not args.long:
            parser.error(f"--{given} needs --long")
    if LONG_WORLD_SEED in args.long_seeds:
        parser.error(f"--long_seeds {LONG_WORLD_SEED}: the test's own seed, already in `long`")
    if 0 in args.long_noise_seeds:
        parser.error("--long_noise_seeds 0: the test's own noise, already in `long`")
    overrides = args.overrides + ([] if args.latent_frames is None else [f"num_output_frames={args.latent_frames}"])
    cfg = load_config(args.config_path, overrides)
    start = time.perf_counter()
    pipe = VideoConditionalPipeline.from_config(cfg)
    report = evaluate(pipe, args.clips, args.seed)
    if args.speed_clips:
        report["speed_ratio"] = speed_ratios(pipe, args.speed_clips, args.seed)
    if args.long:
        long_cfg = load_config(args.config_path, [*overrides, f"num_output_frames={LONG_FRAMES}"])
        long_pipe = VideoConditionalPipeline.from_config(long_cfg)
        worlds = [LONG_WORLD_SEED, *args.long_seeds]
        references = {seed: long_references(long_pipe, seed) for seed in worlds}
        by_noise = {  # noise seed -> world seed (as in the report) -> case -> measures; noise 0 is the test's
            noise: {str(seed): evaluate_long(long_pipe, seed, noise, references[seed]) for seed in worlds}
            for noise in [0, *args.long_noise_seeds]
        }
        report["long"] = by_noise[0][str(LONG_WORLD_SEED)]
        report["long_seeds"] = {str(seed): by_noise[0][str(seed)] for seed in args.long_seeds}
        if args.long_noise_seeds:
            report["long_noise_seeds"] = {str(noise): by_noise[noise] for noise in args.long_noise_seeds}
        cases = [m for by_world in by_noise.values() for by_case in by_world.values() for m in by_case.values()]
        report["long_held"] = f"{sum(not m['failures'] for m in cases)} of {len(cases)}"
    report["settings"] = {
        "config": args.config_path,
        "overrides": overrides,
        "clips": args.clips,
        "speed_clips": args.speed_clips,
    }
    report["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
