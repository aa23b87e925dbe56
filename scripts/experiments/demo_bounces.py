"""Where a long demo rollout leaves its path (issue 19): the long cases of `demo_eval` (LONG_FRAMES latent frames,
397 video frames) rolled out on the CPU, the shape's position along its axis of motion, generated against
true, every 4 frames, the frames where each turns (a bounce, or the late switch), and each leg's speed in its
middle (`demo_eval.leg_speeds`). A generated leg that is shorter or faster than the true one shifts every
later bounce: the path error grows with the video.

    python scripts/experiments/demo_bounces.py demo_model
    python scripts/experiments/demo_bounces.py /tmp/demo_A --seed 6002   # the long cases of another world seed

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

import longlive.demo_eval as demo_eval
import longlive.demo_world as demo_world
from longlive.config import load_config
from longlive.pipeline import VideoConditionalPipeline

CONFIG = "configs/demo_video_conditional.yaml"


def leg_speeds(positions: np.ndarray, turning: list[int], switch: int) -> list[float]:
    """`demo_eval.leg_speeds` of the legs before the switch (after it the shape may move along the other axis),
    rounded to 3 decimals."""
    return [round(v, 3) for v in demo_eval.leg_speeds(positions, [t for t in turning if t < switch])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("--seed", type=int, default=None, help="world seed of the long cases (default: the test's)")
    args = parser.parse_args()
    overrides = [f"wan_model_dir={args.model_dir}", f"num_output_frames={demo_eval.LONG_FRAMES}"]
    cfg = load_config(CONFIG, overrides)
    pipe = VideoConditionalPipeline.from_config(cfg, "cpu")
    first = cfg.num_conditioning_frames
    report = {}
    for kind, clip in zip(("colour", "direction"), demo_eval.long_clips(cfg.height, cfg.width, args.seed), strict=True):
        generated = demo_world.foreground_centroid(demo_eval.long_rollout(pipe, clip)).numpy()
        true = demo_world.foreground_centroid(clip.video[:, first:]).numpy()
        switch = clip.change.frame - first
        axis = demo_eval.motion_axis(true[:switch])  # before the switch
        true_turns, generated_turns = demo_eval.turns(true[:, axis]), demo_eval.turns(generated[:, axis])
        report[kind] = {
            "axis": "yx"[axis],
            "true_turns": true_turns,
            "generated_turns": generated_turns,
            "true_leg_speeds": leg_speeds(true[:, axis], true_turns, switch),
            "generated_leg_speeds": leg_speeds(generated[:, axis], generated_turns, switch),
            "true_every_4": np.round(true[::4, axis], 1).tolist(),
            "generated_every_4": np.round(generated[::4, axis], 1).tolist(),
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
