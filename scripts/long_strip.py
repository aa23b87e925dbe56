"""A frame strip (PNG) of the demo model's long cases: for each case of `test_demo_long_rollout` (the colour
and the direction case of a world seed), the true clip above and the generated video below, every
`--every`-th frame from the first generated one. The late prompt switch is marked by a line before the first
frame after it. Shows in the README what a 397-frame rollout does.

    python scripts/long_strip.py --out example/demo/long_strip.png
    python scripts/long_strip.py --seed 5001 --out /tmp/long_5001.png wan_model_dir=/tmp/demo_long
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np
import torch

from longlive.config import load_config
from longlive.demo_eval import LONG_FRAMES, LONG_WORLD_SEED, long_clips, long_rollout
from longlive.demo_world import Clip
from longlive.pipeline import VideoConditionalPipeline
from longlive.video_io import labelled_rows_image, tensor_to_uint8

DEMO_CONFIG = "configs/demo_video_conditional.yaml"
SWITCH_MARK = (220, 0, 0)  # the line before the first frame after the late switch


def strip_frames(frames: torch.Tensor, every: int, mark_before: int | None) -> np.ndarray:
    """Frames 0, every, 2*every, ... of `frames` [3, N, H, W] in [-1, 1] side by side, [H, n*W, 3] uint8,
    with a vertical line on the left edge of the column `mark_before` (None: no line)."""
    picked = tensor_to_uint8(frames[:, ::every])  # [n, H, W, 3]
    if mark_before is not None and mark_before < len(picked):  # else no shown frame is after the switch
        picked[mark_before, :, :2] = SWITCH_MARK
    return np.concatenate(list(picked), axis=1)


def case_rows(clip: Clip, generated: torch.Tensor, first: int, every: int) -> list[tuple[str, np.ndarray]]:
    """The true clip's row and the generated row of one long case, from video frame `first` on."""
    switch_column = -(-(clip.change.frame - first) // every)  # the first shown frame at or after the switch
    truth = clip.video[:, first : first + generated.shape[1]]
    title = f'"{clip.prompt1}" -> "{clip.prompt2}" at frame {clip.change.frame}; frames {first}, {first + every}, ...'
    return [
        (f"true: {title}", strip_frames(truth, every, switch_column)),
        ("generated", strip_frames(generated, every, switch_column)),
    ]


def long_strip(pipe: VideoConditionalPipeline, seed: int, every: int) -> list[tuple[str, np.ndarray]]:
    """The rows of both long cases of world seed `seed`, each rolled out as `test_demo_long_rollout` does."""
    first = pipe.cfg.num_conditioning_frames
    clips = long_clips(pipe.cfg.height, pipe.cfg.width, seed)
    return [row for clip in clips for row in case_rows(clip, long_rollout(pipe, clip), first, every)]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--seed", type=int, default=LONG_WORLD_SEED, help="the world seed of the cases (test: 0)")
    parser.add_argument("--every", type=int, default=16, help="keep every n-th frame")
    parser.add_argument("--config_path", default=DEMO_CONFIG)
    parser.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. wan_model_dir=/tmp/demo")
    args = parser.parse_args(argv)
    if args.every < 1:
        parser.error(f"--every {args.every}: must be at least 1")
    cfg = load_config(args.config_path, [*args.overrides, f"num_output_frames={LONG_FRAMES}"])
    pipe = VideoConditionalPipeline.from_config(cfg)
    labelled_rows_image(long_strip(pipe, args.seed, args.every)).save(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
