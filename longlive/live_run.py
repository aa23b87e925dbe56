"""One live run behind `longlive serve`: a `Session` stepped by a worker thread, its frames made JPEGs by another.

    worker thread                       encoder thread              the server (event loop)
      session.step() one block            uint8 frames -> JPEG        `on_frame(packet)`, `on_change()`:
      -> uint8 frames, timeline,  ---->   (bounded queue: full   ---> they must not block (the server
      latency, status                     drops the block)            hands them to its loop)
      (never waits on a page)

The GPU thread only hands frames on without blocking; JPEG encoding runs beside it. Uploads are decoded
here too (by content, never by name). The web server around this is `longlive/server.py`.
"""

from __future__ import annotations

import logging
import queue
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from longlive.pipeline import BlockResult, InputError, VideoConditionalPipeline
from longlive.session import Session
from longlive.video_io import VideoReadError, frames_to_tensor, read_frames, tensor_to_uint8

logger = logging.getLogger(__name__)

FRAME_HEADER = struct.Struct("<II")  # video frame index, block index; the JPEG follows


@dataclass(frozen=True)
class ServeSettings:
    """What `longlive serve` takes besides the config."""

    host: str = "127.0.0.1"
    port: int = 7860
    token: str | None = None  # required on every request when set; set (generated) off loopback
    max_upload_bytes: int = 64 << 20
    max_prompt_chars: int = 1000
    jpeg_quality: int = 85
    viewer_frames: int = 64  # frames queued per viewer before its oldest are dropped
    encoder_blocks: int = 4  # blocks waiting for JPEG encoding before new ones are dropped
    pace: bool = True  # keep the rollout at most `lead_seconds` of video ahead of real time
    lead_seconds: float = 1.0
    work_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "longlive-serve")


class ServeError(ValueError):
    """A request the server refuses; `status` is its HTTP status, the message one line for the page."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# -- uploads ---------------------------------------------------------------------------------------


def decode_upload(path: Path, cfg: DictConfig) -> tuple[torch.Tensor, str]:
    """An uploaded file as a conditioning video [1, 3, N, H, W] in [-1, 1], and what it was.

    Decoded by content, never by name: PIL first (an image is a one-frame video), then ffmpeg. A
    video must hold `num_conditioning_frames` frames; only those are decoded.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            kind = f"{image.format} image {image.width}x{image.height}"
            frame = np.array(image.convert("RGB"))  # PIL refuses decompression bombs (MAX_IMAGE_PIXELS)
        return frames_to_tensor(frame[None], cfg.height, cfg.width)[None], kind
    except UnidentifiedImageError:
        pass  # not an image: try it as a video
    except (OSError, Image.DecompressionBombError, ValueError) as err:
        raise ServeError(f"the upload is a broken or oversized image: {first_line(err)}") from None
    try:
        frames = read_frames(path, cfg.num_conditioning_frames)
    except VideoReadError as err:
        message = str(err).replace(str(path), "the upload")
        raise ServeError(f"the upload is neither an image nor a video ffmpeg can decode ({message})") from None
    return frames_to_tensor(frames, cfg.height, cfg.width)[None], f"video {frames.shape[2]}x{frames.shape[1]}"


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# -- one live run ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRequest:
    prompt: str
    seed: int = 0
    length: int | None = None  # latent frames of the whole video; None: no limit
    video: torch.Tensor | None = None
    video_kind: str = ""


def check_length(cfg: DictConfig, length: int | None, conditioning_latents: int = 0) -> None:
    """A session's length (latent frames, conditioning included; None: no end) against the cache's geometry.

    `Session` refuses the same global-attention cases; this says it in the page's words (length, no limit)."""
    if cfg.model_kwargs.local_attn_size == -1:
        if length is None:
            raise ServeError("no limit needs a sliding window (local_attn_size); global attention caches all frames")
        if length > cfg.num_output_frames:
            raise ServeError(
                f"length {length} exceeds num_output_frames={cfg.num_output_frames}, the global-attention cache's "
                "size (restart the server with a larger num_output_frames)"
            )
    if length is not None and length <= conditioning_latents:
        raise ServeError(
            f"length {length} latent frames leaves nothing to generate after {conditioning_latents} conditioning ones"
        )


def image_config(cfg: DictConfig) -> DictConfig:
    """The config an uploaded image conditions under: one frame (what `longlive i2v` forces), whatever the
    server's `num_conditioning_frames` is for videos."""
    out = OmegaConf.merge(cfg, {"num_conditioning_frames": 1})
    OmegaConf.set_readonly(out, True)
    return out


class LiveRun:
    """One session and the threads around it: the worker that steps it, the encoder that makes JPEGs.

    `on_frame(packet)` and `on_change()` are called from those threads and must not block (the server
    hands them to the event loop). Commands from any thread touch a field or an event under the lock.
    """

    def __init__(
        self,
        pipeline: VideoConditionalPipeline,
        request: RunRequest,
        settings: ServeSettings,
        output: Path,
        on_frame: Callable[[bytes], None],
        on_change: Callable[[], None],
    ) -> None:
        self.request = request
        self.settings = settings
        self.on_frame, self.on_change = on_frame, on_change
        self.device = pipeline.device
        self.fps = int(pipeline.cfg.fps)
        self._pipeline = pipeline
        # None: no end. The session plans its blocks as it goes and keeps its frames on disk (mp4 segments).
        self.session = Session(
            pipeline, request.prompt, request.video, seed=request.seed, output=output, max_frames=request.length
        )
        image = request.video is not None and request.video.shape[2] == 1
        self._image_cfg = image_config(pipeline.cfg) if image else None
        self._lock = threading.Lock()
        self._running = threading.Event()
        self._running.set()
        self._stop = threading.Event()
        self._encode: queue.Queue = queue.Queue(maxsize=settings.encoder_blocks)
        self.timeline: list[dict[str, Any]] = []  # the first prompt, then each switch as it landed
        self.pending: str | None = None
        self._pending_since: float | None = None
        self._started = time.perf_counter()
        self.latency_s: float | None = None  # latest prompt (or start) -> its first frame, in the server
        self.frames = 0
        self.latent_frames = 0
        self.block = -1
        self.dropped_blocks = 0
        self.error: str | None = None
        self.done = False
        self._active_s = 0.0  # wall time generating or waiting to generate, pauses excluded
        self._generate_s = 0.0
        self._worker = threading.Thread(target=self._generate, name="longlive-serve-worker", daemon=True)
        self._encoder = threading.Thread(target=self._encode_frames, name="longlive-serve-jpeg", daemon=True)

    def start(self) -> LiveRun:
        self._encoder.start()
        self._worker.start()
        return self

    # -- commands (any thread) ---------------------------------------------------------------------

    def set_prompt(self, prompt: str) -> None:
        self.session.set_prompt(prompt)
        with self._lock:
            self.pending, self._pending_since = prompt.strip(), time.perf_counter()
        self.on_change()

    def pause(self) -> None:
        self._running.clear()
        self.session.pause()
        self.on_change()

    def resume(self) -> None:
        self.session.resume()
        self._running.set()
        self.on_change()

    def stop(self, wait: float | None = None) -> None:
        """End at the next block boundary (the worker closes the session); `wait` seconds for it."""
        self._stop.set()
        self._running.set()
        if wait is not None:
            self.join(wait)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the worker (the session closed, its mp4 finished)."""
        self._worker.join(timeout)

    def save_video(self, path: Path) -> Path:
        return self.session.save(path)

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def state(self) -> dict[str, Any]:
        """What the page shows, as JSON-ready values."""
        with self._lock:
            state = {
                "block": self.block,
                "frames": self.frames,
                "latent_frames": self.latent_frames,
                "length": self.request.length,
                "fps": self.fps,
                "generation_fps": round(self.frames / self._generate_s, 2) if self._generate_s > 0 else 0.0,
                "latency_s": None if self.latency_s is None else round(self.latency_s, 3),
                "prompt": self.session.prompt,
                "pending": self.pending,
                "paused": self.paused and not self.done,
                "done": self.done,
                "error": self.error,
                "dropped_blocks": self.dropped_blocks,
                "seed": self.request.seed,
                "conditioning": self.request.video_kind or None,
                "timeline": list(self.timeline),
            }
        if self.device.type == "cuda":
            state["gpu_memory_gib"] = round(torch.cuda.memory_allocated(self.device) / 1024**3, 2)
            state["gpu_peak_gib"] = round(torch.cuda.max_memory_allocated(self.device) / 1024**3, 2)
        return state

    def replay_record(self, config_path: str | None = None) -> dict[str, Any]:
        """The prompt timeline as one line of `interactive_inference.py`'s JSONL, with what its config needs.

        The job reads `prompts`; `switch_frame_indices`, `num_output_frames` and `seed` are the config
        overrides that replay this session (the `replay` command has them). A session conditioned on an
        upload replays without it (the interactive job takes no video).
        """
        with self._lock:
            prompts = [entry["prompt"] for entry in self.timeline]
            switches = [entry["frame"] for entry in self.timeline[1:]]
            latent_frames = self.latent_frames
        record = {
            "prompts": prompts,
            "switch_frame_indices": switches,
            "num_output_frames": latent_frames,
            "seed": self.request.seed,
            "conditioned_on_upload": self.request.video is not None,
        }
        overrides = f"data_path=timeline.jsonl 'switch_frame_indices={switches}' num_output_frames={latent_frames}"
        record["replay"] = (
            f"python interactive_inference.py --config_path {config_path or 'CONFIG'} {overrides} "
            f"seed={self.request.seed}"
        )
        return record

    # -- the worker thread -------------------------------------------------------------------------

    def _generate(self) -> None:
        try:
            tick = time.perf_counter()
            while not self._stop.is_set():
                if not self._running.wait(timeout=0.1):
                    tick = time.perf_counter()  # paused: this time is not the session's
                    continue
                self._active_s += time.perf_counter() - tick
                tick = time.perf_counter()
                if self._stop.is_set() or not self._keep_pace():
                    break
                started = time.perf_counter()
                result = self._step()
                if result is None:  # the session reached its length
                    break
                self._record(result, time.perf_counter() - started)
        except InputError as err:  # the session's input: one line
            logger.warning("session failed: %s", err)
            self.error = str(err)
        except Exception as err:  # our bug or the device's: the page says so, the server keeps running
            logger.exception("session failed")
            self.error = f"generation failed: {first_line(err)}"
        finally:
            self.session.close()
            with self._lock:
                self.done = True
            self._encode.put(None)  # blocks only if the encoder is behind, and the rollout is over
            self.on_change()
            logger.info("session over: %d frames, %d blocks", self.frames, self.block + 1)

    def _step(self) -> BlockResult | None:
        """One block of the session. An uploaded image conditions as one frame, but the pipeline takes
        `num_conditioning_frames` only from its config, and reads it only in the rollout's first block
        (where it checks and encodes the conditioning video): for that one step the pipeline's config is
        the image's. The server runs one session at a time, so nothing else reads it meanwhile."""
        if self._image_cfg is None or self.block >= 0:
            return self.session.step()
        self._pipeline.cfg, base = self._image_cfg, self._pipeline.cfg
        try:
            return self.session.step()
        finally:
            self._pipeline.cfg = base

    def _keep_pace(self) -> bool:
        """With `pace`, wait while the video is more than `lead_seconds` ahead of real time; False at stop."""
        if not self.settings.pace:
            return True
        ahead = self.frames / self.fps - self._active_s
        if ahead > self.settings.lead_seconds:
            return not self._stop.wait(ahead - self.settings.lead_seconds)
        return True

    def _record(self, result: BlockResult, seconds: float) -> None:
        """Bookkeeping for one finished block, then its frames to the encoder (dropped when it is behind)."""
        frames = tensor_to_uint8(result.frames[0])  # [n, H, W, 3]
        now = time.perf_counter()
        with self._lock:
            first = self.frames
            if not self.timeline:
                self.timeline.append(_timeline_entry(result, first, None))
                self.latency_s = now - self._started
            if result.switch is not None:
                self.timeline.append(_timeline_entry(result, first, result.switch.recached))
            if self.pending is not None and result.prompt == self.pending:
                self.latency_s = now - self._pending_since
                self.pending = self._pending_since = None
            self.frames += len(frames)
            self.block = result.block.index
            self.latent_frames = result.block.end
            self._generate_s += seconds
        try:
            self._encode.put_nowait((first, result.block.index, frames))
        except queue.Full:
            with self._lock:
                self.dropped_blocks += 1
            logger.warning("JPEG encoder behind: block %d not streamed (it is in the video)", result.block.index)
        self.on_change()

    # -- the encoder thread ------------------------------------------------------------------------

    def _encode_frames(self) -> None:
        """Until the worker's None: JPEG each frame and hand it on; a failure loses that block, not the thread
        (the worker's last `put` must find it draining)."""
        while (item := self._encode.get()) is not None:
            first, block, frames = item
            try:
                for offset, frame in enumerate(frames):
                    jpeg = encode_jpeg(frame, self.settings.jpeg_quality)
                    self.on_frame(FRAME_HEADER.pack(first + offset, block) + jpeg)
            except Exception:  # our bug: keep its traceback, keep streaming the next blocks
                logger.exception("block %d could not be streamed", block)


def _timeline_entry(result: BlockResult, video_frame: int, recached: tuple[int, int] | None) -> dict[str, Any]:
    return {
        "block": result.block.index,
        "frame": result.block.start,  # latent frame where the prompt took over (a block boundary)
        "video_frame": video_frame,
        "prompt": result.prompt,
        "recached": None if recached is None else list(recached),
    }


def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    """uint8 [H, W, 3] -> JPEG bytes."""
    from PIL import Image

    buffer = BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
