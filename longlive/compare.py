"""`longlive compare A B`: the quality guard for every optimisation.

A and B are two videos, or two folders whose videos pair up by file name (a reference run and a run
with a speed switch on). For each pair: PSNR (dB), mean per-frame cosine similarity and mean L1 on
[0, 1] pixels, written as a JSON report, plus a side-by-side mp4 (A left, B right) to look at.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from longlive.video_io import VideoReadError, read_frames, write_frames


@dataclass
class PairReport:
    a: str
    b: str
    frames: int
    psnr_db: float
    cosine: float
    l1: float
    side_by_side: str | None


def frame_metrics(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """PSNR over the whole clip, mean per-frame cosine similarity and mean L1, on [0, 1] pixels."""
    x = torch.from_numpy(a).double().flatten(1) / 255  # [N, H*W*3]
    y = torch.from_numpy(b).double().flatten(1) / 255
    mse = torch.mean((x - y) ** 2).item()
    psnr = math.inf if mse == 0 else 10 * math.log10(1.0 / mse)
    cosine = torch.nn.functional.cosine_similarity(x, y, dim=1).mean().item()
    return psnr, cosine, torch.mean((x - y).abs()).item()


def compare_videos(a: Path, b: Path, side_by_side: Path | None, fps: int = 16) -> PairReport:
    frames_a, frames_b = read_frames(a), read_frames(b)
    if frames_a.shape[1:] != frames_b.shape[1:]:
        raise VideoReadError(
            f"{a} is {frames_a.shape[2]}x{frames_a.shape[1]} but {b} is {frames_b.shape[2]}x{frames_b.shape[1]}"
        )
    count = min(len(frames_a), len(frames_b))
    frames_a, frames_b = frames_a[:count], frames_b[:count]
    psnr, cosine, l1 = frame_metrics(frames_a, frames_b)
    written = None
    if side_by_side is not None:
        both = np.concatenate([frames_a, frames_b], axis=2)  # hstack: [N, H, 2W, 3]
        written = str(write_frames(side_by_side, both, fps))
    return PairReport(str(a), str(b), count, psnr, cosine, l1, written)


def pair_up(a: Path, b: Path) -> list[tuple[Path, Path]]:
    """(A, B) for two files, or the videos of two folders that share a file name."""
    if a.is_file() and b.is_file():
        return [(a, b)]
    if a.is_dir() and b.is_dir():
        names = sorted({p.name for p in a.glob("*.mp4")} & {p.name for p in b.glob("*.mp4")})
        if not names:
            raise VideoReadError(f"{a} and {b} have no .mp4 file names in common")
        return [(a / name, b / name) for name in names]
    raise VideoReadError(f"compare needs two videos or two folders, got {a} and {b}")


def compare(a: str | Path, b: str | Path, out: str | Path, fps: int = 16) -> dict:
    """Compare every pair; write `out`/report.json and `out`/<name>_side_by_side.mp4; return the report."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pairs = [compare_videos(x, y, out / f"{x.stem}_side_by_side.mp4", fps) for x, y in pair_up(Path(a), Path(b))]
    report = {
        "pairs": [asdict(p) for p in pairs],
        "min_psnr_db": min(p.psnr_db for p in pairs),
        "min_cosine": min(p.cosine for p in pairs),
        "max_l1": max(p.l1 for p in pairs),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report
