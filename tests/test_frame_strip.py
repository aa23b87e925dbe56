"""scripts/frame_strip.py: one row per finished sample's video, failed samples left out."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest
import torch
from conftest import REPO

from longlive.video_io import write_video

spec = importlib.util.spec_from_file_location("frame_strip", REPO / "scripts" / "frame_strip.py")
frame_strip = importlib.util.module_from_spec(spec)
sys.modules["frame_strip"] = frame_strip
spec.loader.exec_module(frame_strip)


def test_rows_of_finished_samples(tmp_path):
    ok = write_video(tmp_path / "a.mp4", torch.zeros(3, 9, 32, 48), fps=16)
    records = [
        {"index": 0, "status": "ok", "inputs": {"prompt1": "p", "prompt2": "q"}, "outputs": [str(ok), str(ok)]},
        {"index": 1, "status": "error", "inputs": {"prompt1": "bad"}, "outputs": [], "error": "too short"},
    ]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    image = frame_strip.frame_strip(tmp_path, every=4, max_frames=None)  # frames 0, 4, 8
    assert image.size == (3 * 48, 2 * (32 + frame_strip.LABEL_HEIGHT + frame_strip.GAP))
    pixels = np.asarray(image)
    assert abs(int(pixels[frame_strip.LABEL_HEIGHT + 16, 70].mean()) - 128) <= 3  # a mid-grey frame


def test_no_finished_sample_is_an_error(tmp_path):
    (tmp_path / "results.jsonl").write_text(json.dumps({"index": 0, "status": "error", "outputs": []}) + "\n")
    with pytest.raises(SystemExit, match="no finished samples"):
        frame_strip.frame_strip(tmp_path)
