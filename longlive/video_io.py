"""Reading conditioning videos (and images) and writing results.

Frames are read with decord when it is installed and can open the file, otherwise with imageio
(ffmpeg); images with PIL. They are resized to cover the model resolution and center-cropped, as
[3, N, H, W] in [-1, 1]. Videos are written atomically: to a temporary name first, then renamed.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)


class VideoReadError(ValueError):
    """A video (or image) is missing, unreadable or too short; the message names the file."""


class VideoWriterMissing(RuntimeError):
    """This environment cannot write mp4s: imageio's ffmpeg plugin, or the ffmpeg program it runs, is missing."""


def require_video_writer() -> None:
    """Fail now, before a frame is generated, if finished videos could not be written.

    Without imageio's ffmpeg plugin, or without the ffmpeg program it runs (some builds of the plugin
    ship none and look for one on the PATH), every mp4 write fails, and a job would find out only after
    its first rollout: the generation would be lost. (An ffmpeg without libx264 still gets through.)
    """
    try:
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()  # finds the program once, then remembers it
    except ImportError:
        raise VideoWriterMissing(
            "writing mp4s needs imageio's ffmpeg plugin, which is not installed: pip install 'imageio[ffmpeg]'"
        ) from None
    except RuntimeError as err:
        raise VideoWriterMissing(f"writing mp4s needs an ffmpeg program: {err}") from None


def _require_file(path: Path, what: str) -> None:
    if path.is_dir():
        raise VideoReadError(f"{what} {path} is a directory, not {'an' if what == 'image' else 'a'} {what} file")
    if not path.is_file():
        raise VideoReadError(f"{what} not found: {path}")


@contextmanager
def _library_stderr(path: Path) -> Iterator[None]:
    """Keep what decord and ffmpeg print to the process's stderr (fd 2) out of the user's terminal.

    They write from C, around Python's `sys.stderr`, so the descriptor itself is pointed at a temporary
    file while they read; their lines go to the debug log, and the user sees only our one-line error.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode(errors="replace").strip()
            if text:
                logger.debug("video libraries on %s said: %s", path, text)


def read_frames(path: str | Path, num_frames: int | None = None) -> np.ndarray:
    """The first `num_frames` frames of a video (all of them with None) as uint8 [N, H, W, 3]."""
    path = Path(path)
    _require_file(path, "video")
    with _library_stderr(path):
        try:
            frames = _read_with_decord(path, num_frames)
        except Exception as err:  # ImportError, or any decord failure (its DECORDError is a bare Exception)
            logger.debug("decord could not read %s (%s); using imageio", path, err)
            frames = _read_with_imageio(path, num_frames)
    if num_frames is not None and len(frames) < num_frames:
        raise VideoReadError(f"video {path} has {len(frames)} frames; {num_frames} are needed")
    return frames


def _read_with_decord(path: Path, num_frames: int | None) -> np.ndarray:
    import decord

    reader = decord.VideoReader(str(path))
    count = len(reader) if num_frames is None else min(num_frames, len(reader))
    return reader.get_batch(list(range(count))).asnumpy()


def _read_with_imageio(path: Path, num_frames: int | None) -> np.ndarray:
    import imageio.v3 as iio

    frames = []
    try:
        for frame in iio.imiter(path, plugin="pyav" if _has_pyav() else "FFMPEG"):
            frames.append(frame[..., :3])
            if len(frames) == num_frames:
                break
    except Exception as err:  # imageio raises many types for a corrupt file
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise VideoReadError(f"cannot read video {path}: {reason}") from None
    if not frames:
        raise VideoReadError(f"video {path} has no frames")
    return np.stack(frames)


def _has_pyav() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def frames_to_tensor(frames: np.ndarray, height: int, width: int) -> torch.Tensor:
    """uint8 [N, h, w, 3] -> float [3, N, height, width] in [-1, 1]: resized to cover, center-cropped."""
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1  # [N, 3, h, w]
    scale = max(height / video.shape[2], width / video.shape[3])
    size = (max(height, round(video.shape[2] * scale)), max(width, round(video.shape[3] * scale)))
    if size != tuple(video.shape[2:]):
        video = F.interpolate(video, size=size, mode="bilinear", antialias=True, align_corners=False)
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    video = video[:, :, top : top + height, left : left + width].clamp(-1, 1)
    return video.permute(1, 0, 2, 3).contiguous()


def load_video(path: str | Path, num_frames: int, height: int, width: int) -> torch.Tensor:
    """The first `num_frames` frames of `path` at the model resolution, [3, N, height, width] in [-1, 1]."""
    return frames_to_tensor(read_frames(path, num_frames), height, width)


def load_image(path: str | Path, height: int, width: int) -> torch.Tensor:
    """An image as a one-frame video at the model resolution, [3, 1, height, width] in [-1, 1]."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    _require_file(path, "image")
    try:
        with Image.open(path) as image:
            frame = np.array(image.convert("RGB"))  # [h, w, 3] uint8, whatever the mode (L, RGBA, P)
    except (UnidentifiedImageError, OSError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise VideoReadError(f"cannot read image {path}: {reason}") from None
    return frames_to_tensor(frame[None], height, width)


def tensor_to_uint8(frames: torch.Tensor) -> np.ndarray:
    """[3, N, H, W] in [-1, 1] -> uint8 [N, H, W, 3]."""
    video = ((frames.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return video.permute(1, 2, 3, 0).cpu().numpy()


def write_video(path: str | Path, frames: torch.Tensor, fps: int) -> Path:
    """Write [3, N, H, W] frames in [-1, 1] as an H.264 mp4, atomically."""
    return write_frames(path, tensor_to_uint8(frames), fps)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary name beside `path` to write to; renamed to `path` on success, removed on failure.

    Readers (a resumed job, a player, a preview viewer) never see a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        yield temporary
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, path)


def write_frames(path: str | Path, frames: np.ndarray | list[np.ndarray], fps: int) -> Path:
    """Write uint8 frames [N, H, W, 3] as an H.264 mp4, atomically."""
    with atomic_path(path) as temporary, open_video_writer(temporary, fps) as writer:
        for frame in frames:
            writer.append_data(frame)
    return Path(path)


def open_video_writer(path: str | Path, fps: int, growing: bool = False):
    """An imageio H.264 writer (`append_data(frame)`, `close()`).

    `growing`: a fragmented mp4 with a keyframe every second, readable by players while it is still
    being written (a live session's output).
    """
    import imageio.v2 as imageio

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    params = ["-g", str(fps), "-movflags", "frag_keyframe+empty_moov+default_base_moof"] if growing else None
    # The format is named so a missing ffmpeg backend is an error, not a file in another format.
    return imageio.get_writer(
        path, format="FFMPEG", fps=fps, codec="libx264", quality=8, macro_block_size=1, ffmpeg_params=params
    )


def write_image(path: str | Path, frame: np.ndarray) -> Path:
    """Write one uint8 frame [H, W, 3] as a PNG, atomically (a preview others may be reading)."""
    from PIL import Image

    with atomic_path(path) as temporary:
        Image.fromarray(frame).save(temporary, format="PNG")
    return Path(path)


def write_latents(path: str | Path, latents: torch.Tensor) -> Path:
    """Save latents [T, C, h, w] with `torch.save`, atomically (read back with `torch.load`)."""
    with atomic_path(path) as temporary:
        torch.save(latents.detach().cpu().contiguous(), temporary)
    return Path(path)
