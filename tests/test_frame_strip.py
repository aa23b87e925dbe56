"""scripts/frame_strip.py: one row per finished sample's video, failed samples left out."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import script_module

from longlive.demo_eval import LONG_SWITCH, long_clips
from longlive.video_io import LABEL_HEIGHT, ROW_GAP, write_video

frame_strip = script_module("scripts/frame_strip.py")


def test_rows_of_finished_samples(tmp_path):
    """Written (ok) and already-written (skipped, a rerun) samples get a row per video, failed ones none."""
    grey = write_video(tmp_path / "grey.mp4", torch.zeros(3, 9, 32, 48), fps=16)
    white = write_video(tmp_path / "white.mp4", torch.ones(3, 9, 32, 48), fps=16)
    records = [
        {"index": 2, "status": "skipped", "inputs": {"prompt1": "p"}, "outputs": [str(white)]},
        {"index": 0, "status": "ok", "inputs": {"prompt1": "p", "prompt2": "q"}, "outputs": [str(grey), str(grey)]},
        {"index": 1, "status": "failed", "inputs": {"prompt1": "bad"}, "outputs": [str(white)], "error": "x"},
    ]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    image = frame_strip.frame_strip(tmp_path, every=4, max_frames=None)  # frames 0, 4, 8
    row_height = 32 + LABEL_HEIGHT + ROW_GAP
    assert image.size == (3 * 48, 3 * row_height)
    pixels = np.asarray(image)
    middles = [int(pixels[row * row_height + LABEL_HEIGHT + 16, 70].mean()) for row in range(3)]
    assert [abs(m - 128) <= 3 for m in middles] == [True, True, False]  # sample 0's two videos, in order
    assert middles[2] >= 250  # then sample 2's (skipped) white one; the failed sample has no row


def test_no_finished_sample_is_an_error(tmp_path):
    (tmp_path / "results.jsonl").write_text(json.dumps({"index": 0, "status": "error", "outputs": []}) + "\n")
    with pytest.raises(SystemExit, match="no finished samples"):
        frame_strip.frame_strip(tmp_path)


def test_long_strip_rows_mark_the_late_switch():
    """scripts/long_strip.py: a long case's true and generated rows show every n-th frame from the first
    generated one, with the switch line on the left edge of the first shown frame at or after the switch."""
    long_strip = script_module("scripts/long_strip.py")
    clip, first, every = long_clips()[0], 9, 16
    generated = clip.video[:, first:].clone()
    generated[:, :, :4] = 1.0  # a white band on top: the generated row is not the true one
    (true_label, truth), (_, row) = long_strip.case_rows(clip, generated, first, every)
    height, width = clip.video.shape[2:]
    shown = -(-generated.shape[1] // every)
    assert truth.shape == row.shape == (height, shown * width, 3)
    assert clip.change.frame == 4 * LONG_SWITCH - 3 and f"at frame {clip.change.frame}" in true_label
    column = -(-(clip.change.frame - first) // every)
    assert first + column * every >= clip.change.frame > first + (column - 1) * every
    marked = [c for c in range(shown) if (truth[:, c * width, :] == long_strip.SWITCH_MARK).all()]
    assert marked == [column]
    assert (row[:4, : width * column] == 255).all() and not (truth[:4] == 255).all()
