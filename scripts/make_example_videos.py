"""Write the small example conditioning videos in example/videos/ and their first frames in
example/images/ (the image-to-video examples), and the demo world's examples in example/demo/ with
example/demo_video_conditional.jsonl (the demo model's job). Deterministic; rerun to recreate.

python scripts/make_example_videos.py
"""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from longlive.demo_world import CELL_PX, SIZE_CELLS, SPEEDS, Change, Scene, caption, change_caption, on_lattice
from longlive.demo_world import render as render_demo
from longlive.video_io import tensor_to_uint8, write_video

HEIGHT, WIDTH, FRAMES, FPS = 96, 160, 48, 16
EXAMPLES = {
    "red_square_right.mp4": dict(color=(220, 40, 40), start=(48, 20), velocity=(0, 2), shape="square"),
    "blue_circle_down.mp4": dict(color=(40, 80, 230), start=(16, 80), velocity=(1.2, 0), shape="circle"),
}


def render(color, start, velocity, shape, size: int = 24) -> torch.Tensor:
    """A shape moving on a light background: [3, N, H, W] in [-1, 1]."""
    ys, xs = np.mgrid[:HEIGHT, :WIDTH]
    video = np.full((FRAMES, HEIGHT, WIDTH, 3), 235, dtype=np.uint8)
    for i in range(FRAMES):
        cy, cx = start[0] + velocity[0] * i, start[1] + velocity[1] * i
        if shape == "square":
            inside = (abs(ys - cy) <= size / 2) & (abs(xs - cx) <= size / 2)
        else:
            inside = (ys - cy) ** 2 + (xs - cx) ** 2 <= (size / 2) ** 2
        video[i][inside] = color
    return torch.from_numpy(video).permute(3, 0, 1, 2).float() / 127.5 - 1


# The demo model's examples (configs/demo_video_conditional.yaml): videos of the demo world at 64x64, 45
# frames each, and the job's lines: prompt1 captions the video, prompt2 continues it or asks for a change.
# The world's own shapes (SIZE_CELLS latent cells wide, at its speed), placed on its lattice of cells.
DEMO_SIZE, DEMO_SPEED = SIZE_CELLS[0] * CELL_PX, SPEEDS[0]
DEMO_VIDEOS = {
    "red_square_right": Scene("square", "red", (32.0, 16.0), (0.0, DEMO_SPEED), DEMO_SIZE),
    "green_triangle_right": Scene("triangle", "green", (40.0, 16.0), (0.0, DEMO_SPEED), DEMO_SIZE),
    "yellow_square_down": Scene("square", "yellow", (16.0, 40.0), (DEMO_SPEED, 0.0), DEMO_SIZE),
}
DEMO_JOB = [  # (video, the change prompt2 asks for, from video frame 9 on)
    ("red_square_right", None),
    ("red_square_right", Change(9, colour="blue")),
    ("green_triangle_right", Change(9, direction="up")),
    ("yellow_square_down", Change(9, direction="left")),
]


def write_demo_examples(example: Path) -> None:
    """example/demo/<name>.mp4 (the scene as captioned: the change is prompt2's to make) and the job's JSONL."""
    for name, scene in DEMO_VIDEOS.items():
        assert on_lattice(scene) == scene, f"{name} is off the world's lattice"
        print(write_video(example / "demo" / f"{name}.mp4", render_demo(scene, 45), FPS))
    lines = []
    for name, change in DEMO_JOB:
        scene = DEMO_VIDEOS[name]
        prompt2 = caption(scene) if change is None else change_caption(scene, change)
        record = {"video_path": f"example/demo/{name}.mp4", "prompt1": caption(scene), "prompt2": prompt2}
        lines.append(json.dumps(record))
    (example / "demo_video_conditional.jsonl").write_text("\n".join(lines) + "\n")


def main() -> None:
    example = Path(__file__).resolve().parents[1] / "example"
    write_demo_examples(example)
    (example / "images").mkdir(exist_ok=True)
    for name, spec in EXAMPLES.items():
        video = render(**spec)
        print(write_video(example / "videos" / name, video, FPS))
        image = example / "images" / Path(name).with_suffix(".png")
        iio.imwrite(image, tensor_to_uint8(video[:, :1])[0])  # the first frame, before compression
        print(image)


if __name__ == "__main__":
    main()
