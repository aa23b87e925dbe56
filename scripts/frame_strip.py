"""A frame strip (PNG) of a job's videos: one row per finished sample, every `--every`-th frame, the
sample's prompts written above its row. Shows in a README what a job made without playing videos.

    python scripts/frame_strip.py videos/demo_video_conditional --every 3 --max_frames 15 \
        --out example/demo/output_strip.png
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from longlive.jobs import read_results
from longlive.video_io import labelled_rows_image, read_frames

FINISHED = ("ok", "skipped")  # skipped: a rerun found its videos already written


def finished_samples(output_folder: Path) -> list[dict]:
    """The `results.jsonl` records of `output_folder` whose videos exist, in sample order."""
    records = read_results(output_folder / "results.jsonl")
    return sorted((r for r in records if r["status"] in FINISHED), key=lambda r: r["index"])


def strip_row(video: Path, every: int, max_frames: int | None) -> np.ndarray:
    """Frames 0, every, 2*every, ... of `video` side by side: [H, n*W, 3] uint8."""
    frames = read_frames(video)[::every][:max_frames]  # [n, H, W, 3]
    return np.concatenate(list(frames), axis=1)


def frame_strip(output_folder: Path, every: int = 4, max_frames: int | None = 12) -> Image.Image:
    """Rows of every finished sample's videos, each under a line naming its prompts."""
    samples = finished_samples(output_folder)
    if not samples:
        raise SystemExit(f"{output_folder}: no finished samples in results.jsonl")
    labelled = [(s["inputs"], Path(path)) for s in samples for path in s["outputs"]]
    return labelled_rows_image(
        [
            (f"{inputs.get('prompt1', '')}  ->  {inputs.get('prompt2', '')}", strip_row(path, every, max_frames))
            for inputs, path in labelled
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output_folder", type=Path, help="a job's output_folder (holds results.jsonl)")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--every", type=int, default=4, help="keep every n-th frame")
    parser.add_argument("--max_frames", type=int, default=12, help="frames per row at most")
    args = parser.parse_args(argv)
    frame_strip(args.output_folder, args.every, args.max_frames).save(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
