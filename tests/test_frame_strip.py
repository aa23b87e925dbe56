"""scripts/frame_strip.py: one row per finished sample's video, failed samples left out."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import script_module

from longlive.video_io import write_video

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
    row_height = 32 + frame_strip.LABEL_HEIGHT + frame_strip.GAP
    assert image.size == (3 * 48, 3 * row_height)
    pixels = np.asarray(image)
    middles = [int(pixels[row * row_height + frame_strip.LABEL_HEIGHT + 16, 70].mean()) for row in range(3)]
    assert [abs(m - 128) <= 3 for m in middles] == [True, True, False]  # sample 0's two videos, in order
    assert middles[2] >= 250  # then sample 2's (skipped) white one; the failed sample has no row


def test_no_finished_sample_is_an_error(tmp_path):
    (tmp_path / "results.jsonl").write_text(json.dumps({"index": 0, "status": "error", "outputs": []}) + "\n")
    with pytest.raises(SystemExit, match="no finished samples"):
        frame_strip.frame_strip(tmp_path)
