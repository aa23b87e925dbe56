"""Measure a demo model over random demo-world clips and print one JSON report (longlive.demo_eval).

    python scripts/eval_demo.py --config_path configs/demo_video_conditional.yaml --clips 18
    python scripts/eval_demo.py --config_path configs/demo_video_conditional.yaml wan_model_dir=/tmp/demo
    python scripts/eval_demo.py --clips 12 --latent_frames 100     # long rollouts: where does it break?
    python scripts/eval_demo.py --long model_kwargs.use_infinite_attention=true   # test_demo_long_rollout's cases

For each kind of clip (continued, changing colour, changing direction at the first generated frame) and
with and without the conditioning frames: the mean path error (px), velocity error (px/frame), and the
share of frames in the expected colour in the first generated block and after it, and the path error
of every 12 generated frames in turn (`path_error_per_window`; `--latent_frames` makes the rollouts
longer than the config's `num_output_frames`, conditioning included). Then `speed_ratio`, the generated
speed over the true one per world speed (`--speed_clips` clips a speed; 0 skips it), and with `--long`,
`long`: what `test_demo_long_rollout` bounds, on its two 397-frame cases (`demo_eval.evaluate_long`;
`device=cuda` runs them in seconds). Run it before and after more training (`scripts/train_demo.py
--resume`) to see what the training bought.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence

from longlive.config import load_config
from longlive.demo_eval import LONG_FRAMES, evaluate, evaluate_long, speed_ratios
from longlive.pipeline import VideoConditionalPipeline


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
    parser.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. wan_model_dir=/tmp/demo")
    args = parser.parse_args(argv)
    overrides = args.overrides + ([] if args.latent_frames is None else [f"num_output_frames={args.latent_frames}"])
    cfg = load_config(args.config_path, overrides)
    start = time.perf_counter()
    pipe = VideoConditionalPipeline.from_config(cfg)
    report = evaluate(pipe, args.clips, args.seed)
    if args.speed_clips:
        report["speed_ratio"] = speed_ratios(pipe, args.speed_clips, args.seed)
    if args.long:
        long_cfg = load_config(args.config_path, [*overrides, f"num_output_frames={LONG_FRAMES}"])
        report["long"] = evaluate_long(VideoConditionalPipeline.from_config(long_cfg))
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
