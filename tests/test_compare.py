"""`longlive compare`: the metrics are right on known inputs, and the report and side-by-side are written."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from longlive.cli import main
from longlive.compare import frame_metrics
from longlive.video_io import read_frames, write_video


def test_frame_metrics_closed_form():
    a = np.full((2, 4, 4, 3), 100, dtype=np.uint8)
    assert frame_metrics(a, a)[0] == math.inf and frame_metrics(a, a)[1:] == pytest.approx((1.0, 0.0))
    b = a + 51  # every pixel off by 51/255 = 0.2 -> MSE 0.04 -> PSNR 10*log10(25) dB
    psnr, cosine, l1 = frame_metrics(a, b)
    assert psnr == pytest.approx(10 * math.log10(25)) and l1 == pytest.approx(0.2)
    assert cosine == pytest.approx(1.0)  # uniform frames point the same way


def test_compare_folders_writes_report_and_side_by_side(tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    video = torch.rand(3, 5, 32, 48, generator=g) * 2 - 1
    for folder, frames in (("ref", video), ("fast", (video + 0.02).clamp(-1, 1))):
        write_video(tmp_path / folder / "rank0-0-0_regular.mp4", frames, fps=16)
    assert main(["compare", str(tmp_path / "ref"), str(tmp_path / "fast"), "--out", str(tmp_path / "cmp")]) == 0
    report = json.loads((tmp_path / "cmp" / "report.json").read_text())
    assert json.loads(capsys.readouterr().out) == report
    (pair,) = report["pairs"]
    assert pair["frames"] == 5 and 20 < pair["psnr_db"] < 60 and pair["cosine"] > 0.99 and 0 < pair["l1"] < 0.05
    side = read_frames(tmp_path / "cmp" / "rank0-0-0_regular_side_by_side.mp4")
    assert side.shape == (5, 32, 96, 3)


def test_compare_bad_inputs_are_one_line(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no .mp4 file names in common" in err[0]
