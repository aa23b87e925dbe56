"""Where a long demo rollout leaves its path (issue 19): the long cases of `demo_eval` (LONG_FRAMES latent frames,
397 video frames) rolled out on the CPU, the shape's position along its axis of motion, generated against
true, every 4 frames, and the frames where each turns (a bounce, or the late switch). A generated leg that is
shorter or faster than the true one shifts every later bounce: the path error grows with the video.

    python scripts/experiments/demo_bounces.py demo_model
    python scripts/experiments/demo_bounces.py /tmp/demo_A --speeds 1.5   # a world of one speed (branch s8-h19ss)

`--speeds` replaces the demo world's speeds for this process only (what branch `s8-h19ss` does in
`demo_world.SPEEDS`), for weights trained on such a world. Prints one JSON object.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("--speeds", type=float, nargs="+", default=None, help="the world's speeds (px/frame at 64x64)")
    args = parser.parse_args()
    if args.speeds:
        demo_world.SPEEDS = tuple(args.speeds)  # read by sample_scene at each draw
    overrides = [f"wan_model_dir={args.model_dir}", f"num_output_frames={demo_eval.LONG_FRAMES}"]
    cfg = load_config(CONFIG, [*overrides, "model_kwargs.use_infinite_attention=true"])
    pipe = VideoConditionalPipeline.from_config(cfg, "cpu")
    first = cfg.num_conditioning_frames
    report = {}
    for kind, clip in zip(("colour", "direction"), demo_eval.long_clips(cfg.height, cfg.width), strict=True):
        generated = demo_world.foreground_centroid(demo_eval.long_rollout(pipe, clip)).numpy()
        true = demo_world.foreground_centroid(clip.video[:, first:]).numpy()
        axis = demo_eval.motion_axis(true[: clip.change.frame - first])  # before the switch
        report[kind] = {
            "axis": "yx"[axis],
            "true_turns": demo_eval.turns(true[:, axis]),
            "generated_turns": demo_eval.turns(generated[:, axis]),
            "true_every_4": np.round(true[::4, axis], 1).tolist(),
            "generated_every_4": np.round(generated[::4, axis], 1).tolist(),
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
