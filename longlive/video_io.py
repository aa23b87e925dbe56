"""Reading conditioning videos (and images) and writing results.

Frames are read with decord when it is installed and can open the file, otherwise with imageio
(ffmpeg); images with PIL. They are resized to cover the model resolution and center-cropped, as
[3, N, H, W] in [-1, 1]. Videos are written atomically: to a temporary name first, then renamed.

Generated videos are written as they are made (`FrameEncoder`): each block is converted to uint8 on its
device and queued to a thread that feeds ffmpeg (imageio-ffmpeg runs it as its own process), so the
rollout waits on the encoder only when the queue is full, and no more than the queue is held on the host.
A live session's record is a `SegmentedVideo`: finished mp4 segments on disk, cut whenever someone asks
for the video so far.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, UnidentifiedImageError

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
    """[3, N, H, W] in [-1, 1] -> uint8 [N, H, W, 3] (converted on the frames' device)."""
    return landed(to_host_uint8(frames)).numpy()


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
    being written (a live session's segments). It has no B-frames: with them each segment starts with a
    decoding delay, and segments joined by stream copy gain duplicated frames at the seams.
    """
    import imageio.v2 as imageio

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fragmented = ["-g", str(fps), "-bf", "0", "-movflags", "frag_keyframe+empty_moov+default_base_moof"]
    params = fragmented if growing else None
    # The format is named so a missing ffmpeg backend is an error, not a file in another format.
    return imageio.get_writer(
        path, format="FFMPEG", fps=fps, codec="libx264", quality=8, macro_block_size=1, ffmpeg_params=params
    )


def write_image(path: str | Path, frame: np.ndarray) -> Path:
    """Write one uint8 frame [H, W, 3] as a PNG, atomically (a preview others may be reading)."""
    with atomic_path(path) as temporary:
        Image.fromarray(frame).save(temporary, format="PNG")
    return Path(path)


def write_latents(path: str | Path, latents: torch.Tensor) -> Path:
    """Save latents [T, C, h, w] with `torch.save`, atomically (read back with `torch.load`)."""
    with atomic_path(path) as temporary:
        torch.save(latents.detach().cpu().contiguous(), temporary)
    return Path(path)


# -- writing as the frames are made -----------------------------------------------------------------


def to_host_uint8(frames: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Event | None]:
    """[3, n, H, W] in [-1, 1] on any device -> uint8 [n, H, W, 3] on the host, and the CUDA event that
    marks the copy done (None off CUDA), as `to_host`. The conversion runs on the frames' device (a
    quarter of the float32 bytes cross the bus)."""
    video = ((frames.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).contiguous()
    return to_host(video)


def to_host(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Event | None]:
    """`tensor` on the host, and the CUDA event that marks the copy done (None off CUDA).

    From a GPU the copy goes to pinned memory without waiting, so the caller can queue the next block's
    work while it lands (a plain `.cpu()` would make the host wait for all the work queued before it).
    Whoever reads the result first waits on the event.
    """
    if tensor.device.type != "cuda":
        return tensor.cpu(), None
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    host.copy_(tensor, non_blocking=True)
    done = torch.cuda.Event()
    done.record(torch.cuda.current_stream(tensor.device))
    return host, done


def landed(copy: tuple[torch.Tensor, torch.cuda.Event | None]) -> torch.Tensor:
    """The host tensor of a `to_host` copy, once the copy has landed."""
    host, done = copy
    if done is not None:
        done.synchronize()
    return host


QUEUE_BLOCKS = 4  # blocks waiting for the encoder at most: the frames a job holds on the host


class FrameEncoder:
    """An mp4 written from a background thread: `put` queues a block of frames and returns at once.

    The queue holds at most `max_blocks` blocks (the only frames on the host); `put` waits only when it
    is full. An error in the encoder thread is raised by the next `put` or by `close`. Use it as a
    context manager: leaving on an exception stops the encoder without waiting for the queued frames
    (`abort`). It writes to the path it is given; `atomic_path` gives the temporary name. With `preview`,
    each block's last frame is also written there as a PNG (by the encoder thread, off the GPU's way).
    """

    _END = None

    def __init__(
        self,
        path: str | Path,
        fps: int,
        growing: bool = False,
        max_blocks: int = QUEUE_BLOCKS,
        preview: Path | None = None,
    ) -> None:
        self.path = Path(path)
        self.preview = preview
        self.frames_written = 0  # frames handed to ffmpeg (encoder thread)
        self._writer = open_video_writer(self.path, fps, growing)
        self._queue: queue.Queue = queue.Queue(maxsize=max_blocks)
        self._error: BaseException | None = None
        self._aborted = threading.Event()
        self._thread = threading.Thread(target=self._encode, name=f"longlive-encoder-{self.path.name}", daemon=True)
        self._thread.start()

    def put(self, frames: torch.Tensor) -> None:
        """Queue frames [3, n, H, W] in [-1, 1] (any device) for the mp4, converted to uint8 on their device."""
        self._raise_error()
        self._queue.put(to_host_uint8(frames.detach()))

    def close(self) -> Path:
        """Write every queued frame and finish the file; raises what went wrong in the encoder."""
        if self._thread.is_alive():
            self._queue.put(self._END)
            self._thread.join()
        self._raise_error()
        return self.path

    def abort(self) -> None:
        """Stop now: queued frames are dropped, the file is left unfinished (the caller removes it)."""
        self._aborted.set()
        while self._thread.is_alive():
            try:  # make room so the thread sees the end marker
                self._queue.get_nowait()
            except queue.Empty:
                pass
            try:
                self._queue.put(self._END, timeout=0.1)
            except queue.Full:
                continue
            self._thread.join(timeout=1.0)

    def __enter__(self) -> FrameEncoder:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()

    def _encode(self) -> None:
        try:
            while (item := self._queue.get()) is not self._END:
                if self._aborted.is_set():
                    continue
                frames = landed(item)  # the block's copy to pinned memory
                for frame in frames.numpy():
                    self._writer.append_data(frame)
                    self.frames_written += 1
                if self.preview is not None and len(frames):
                    write_image(self.preview, frames[-1].numpy())
        except BaseException as err:  # kept for the generating thread, which raises it
            self._error = err
            self._aborted.set()
            while self._queue.get() is not self._END:  # keep the producer from blocking on a full queue
                pass
        try:
            self._writer.close()  # ffmpeg finishes the file
        except BaseException as err:
            self._error = self._error or err

    def _raise_error(self) -> None:
        if self._error is not None:
            raise OSError(f"writing {self.path} failed: {self._error}") from self._error


class SegmentedVideo:
    """A growing video kept on disk as finished mp4 segments plus the one being written (a live session's
    record: memory stays flat however long it runs).

    `save` finishes the current segment (ffmpeg writes a file completely only when it is closed), starts
    the next one at the following `append`, and joins the segments into one mp4 by stream copy (no
    re-encoding). Thread-safe: one thread appends, others save.
    """

    def __init__(self, folder: str | Path, fps: int, preview: Path | None = None) -> None:
        self.folder = Path(folder)
        self.preview = preview  # the latest frame as a PNG (see `FrameEncoder`)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.fps = fps
        self.frames = 0  # appended so far
        self._segments: list[Path] = []  # finished
        self._encoder: FrameEncoder | None = None
        self._lock = threading.Lock()

    @property
    def current(self) -> Path | None:
        """The segment being written (a fragmented mp4 players can open while it grows), if any."""
        return None if self._encoder is None else self._encoder.path

    def append(self, frames: torch.Tensor) -> None:
        """Frames [3, n, H, W] in [-1, 1], encoded in the background."""
        with self._lock:
            if self._encoder is None:
                path = self.folder / f"segment{len(self._segments):05d}.mp4"
                self._encoder = FrameEncoder(path, self.fps, growing=True, preview=self.preview)
            self._encoder.put(frames)
            self.frames += frames.shape[1]

    def save(self, path: str | Path) -> tuple[Path, int]:
        """Every frame so far as one mp4 at `path` (atomically); returns it and the number of frames."""
        with self._lock:
            self._finish_segment()
            segments, frames = list(self._segments), self.frames
        if not segments:
            raise ValueError("no frames yet: nothing to save")
        with atomic_path(path) as temporary:
            join_segments(segments, temporary)
        return Path(path), frames

    def close(self) -> None:
        """Finish the current segment (idempotent)."""
        with self._lock:
            self._finish_segment()

    def remove(self) -> None:
        """Delete the segments and their folder."""
        self.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _finish_segment(self) -> None:
        if self._encoder is not None:
            self._segments.append(self._encoder.close())
            self._encoder = None


def join_segments(segments: list[Path], path: Path) -> None:
    """Concatenate mp4 segments of the same stream into `path` by stream copy (ffmpeg's concat demuxer)."""
    if len(segments) == 1:
        shutil.copyfile(segments[0], path)
        return
    import imageio_ffmpeg

    with tempfile.NamedTemporaryFile("w", suffix=".txt", dir=path.parent, delete=False) as listing:
        listing.writelines(f"file '{segment.resolve()}'\n" for segment in segments)
    try:
        command = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "concat", "-safe", "0"]
        command += ["-i", listing.name, "-c", "copy", "-f", "mp4", str(path)]
        done = subprocess.run(command, capture_output=True, text=True)
    finally:
        os.unlink(listing.name)
    if done.returncode != 0:
        raise OSError(f"joining {len(segments)} segments into {path} failed: {done.stderr.strip()}")


LABEL_HEIGHT = 14  # px of the text line above each row of `labelled_rows_image`
ROW_GAP = 4  # px between one row's frames and the next row's text


def labelled_rows_image(rows: Sequence[tuple[str, np.ndarray]]) -> Image.Image:
    """Rows of frames side by side ([H, W, 3] uint8 each), stacked, each under its line of text: a strip that
    shows in a README what videos did without playing them (scripts/frame_strip.py, scripts/long_strip.py)."""
    width = max(row.shape[1] for _, row in rows)
    height = sum(row.shape[0] + LABEL_HEIGHT + ROW_GAP for _, row in rows)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw, top = ImageDraw.Draw(canvas), 0
    for label, row in rows:
        draw.text((2, top + 1), label, fill=(0, 0, 0))
        canvas.paste(Image.fromarray(row), (0, top + LABEL_HEIGHT))
        top += row.shape[0] + LABEL_HEIGHT + ROW_GAP
    return canvas
