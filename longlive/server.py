"""`longlive serve`: a web page that steers one live `Session` (start, watch, prompt, pause, download).

    worker thread                       encoder thread              event loop (uvicorn)
      session.step() one block            uint8 frames -> JPEG        per viewer: a bounded deque of
      -> uint8 frames, timeline,  ---->   (bounded queue: full   ---> frames (oldest dropped when
      latency, status                     drops the block)            full) + the latest state; one
      (never waits on a client)                                       sender task per WebSocket

The GPU thread only hands frames on without blocking; JPEG encoding runs beside it, and each viewer
gets what it can take: a slow viewer loses frames, it never holds up the rollout or the other viewers.

Transport: one WebSocket per page. Binary messages are frames (`FRAME_HEADER`: video frame index and
block index, then the JPEG); text messages are the session state as JSON. Commands are small JSON POSTs;
an upload is the raw body of one POST, size-capped while it streams, decoded by content (PIL, then
ffmpeg), never by its name. No endpoint takes a path: the server writes only under its own folders.

Access: bound to 127.0.0.1 by default (Host header checked against loopback names, so another site cannot
reach it through DNS rebinding); any other host requires a token (generated and printed with the URL
unless `--token`); a request without it gets 401. POSTs need a JSON body and the page's client header,
which a cross-site form cannot send. One session at a time: the page that started it steers it; other
pages watch read-only and may take it over.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import queue
import secrets
import struct
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, HTTPConnection, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from longlive.config import derive_geometry
from longlive.pipeline import BlockResult, InputError, VideoConditionalPipeline
from longlive.session import Session
from longlive.video_io import VideoReadError, frames_to_tensor, read_frames, tensor_to_uint8

logger = logging.getLogger(__name__)

FRAME_HEADER = struct.Struct("<II")  # video frame index, block index; the JPEG follows
CLIENT_HEADER = "x-longlive-client"
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}
# "No limit" on a sliding window: the session runs until `stop`, at most an hour of video, because the
# pipeline plans its blocks up front (a day's plan takes about a second, holding the GIL).
NO_LIMIT_SECONDS = 3600


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


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_token(settings: ServeSettings) -> ServeSettings:
    """Off loopback a token is mandatory: the user's, or a generated one (printed with the URL)."""
    if settings.token or is_loopback(settings.host):
        return settings
    return ServeSettings(**{**settings.__dict__, "token": secrets.token_urlsafe(24)})


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
        raise ServeError(f"the upload is a broken or oversized image: {_first_line(err)}") from None
    try:
        frames = read_frames(path, cfg.num_conditioning_frames)
    except VideoReadError as err:
        message = str(err).replace(str(path), "the upload")
        raise ServeError(f"the upload is neither an image nor a video ffmpeg can decode ({message})") from None
    return frames_to_tensor(frames, cfg.height, cfg.width)[None], f"video {frames.shape[2]}x{frames.shape[1]}"


def _first_line(err: BaseException) -> str:
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


def session_config(
    cfg: DictConfig, length: int | None, conditioning_latents: int = 0, image: bool = False
) -> DictConfig:
    """The config with this session's length (`num_output_frames`), checked against the cache's geometry;
    an `image` conditions as one frame (what `longlive i2v` sets), whatever the server's video setting."""
    if length is None:
        if cfg.model_kwargs.local_attn_size == -1:
            raise ServeError("no limit needs a sliding window (local_attn_size); global attention caches all frames")
        most = NO_LIMIT_SECONDS * cfg.fps // derive_geometry(cfg).vae_temporal_stride
        length = max(cfg.num_output_frames, most)
    if length <= conditioning_latents:
        raise ServeError(
            f"length {length} latent frames leaves nothing to generate after {conditioning_latents} conditioning ones"
        )
    if cfg.model_kwargs.local_attn_size == -1 and length > cfg.num_output_frames:
        raise ServeError(
            f"length {length} exceeds num_output_frames={cfg.num_output_frames}, the global-attention cache's size "
            "(restart the server with a larger num_output_frames)"
        )
    out = OmegaConf.merge(cfg, {"num_output_frames": length, **({"num_conditioning_frames": 1} if image else {})})
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
        session_cfg: DictConfig,
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
        self.length = int(session_cfg.num_output_frames)
        self._pipeline, self._session_cfg = pipeline, session_cfg
        self.session = Session(pipeline, request.prompt, request.video, seed=request.seed, output=output)
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
                "length": None if self.request.length is None else self.length,
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
                # The pipeline reads num_output_frames when the rollout starts: the server owns it and runs
                # one session at a time, so the session's length is its config while it steps.
                self._pipeline.cfg, base = self._session_cfg, self._pipeline.cfg
                try:
                    started = time.perf_counter()
                    result = self.session.step()
                finally:
                    self._pipeline.cfg = base
                if result is None:
                    break
                self._record(result, time.perf_counter() - started)
                if self.latent_frames >= self.length:
                    break
        except InputError as err:  # the session's input: one line
            logger.warning("session failed: %s", err)
            self.error = str(err)
        except Exception as err:  # our bug or the device's: the page says so, the server keeps running
            logger.exception("session failed")
            self.error = f"generation failed: {_first_line(err)}"
        finally:
            self.session.close()
            with self._lock:
                self.done = True
            self._encode.put(None)  # blocks only if the encoder is behind, and the rollout is over
            self.on_change()
            logger.info("session over: %d frames, %d blocks", self.frames, self.block + 1)

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


# -- the web server --------------------------------------------------------------------------------


class Viewer:
    """One connected page: its frames (oldest dropped when full) and whether it owes it the state."""

    def __init__(self, client: str, max_frames: int) -> None:
        self.client = client
        self.frames: deque[bytes] = deque(maxlen=max_frames)
        self.state_due = True
        self.dropped = 0
        self.wake = asyncio.Event()


class LiveServer:
    """The one session of this server, who steers it, the pending upload, and the connected pages.

    Event-loop code only touches `viewers`; the worker and encoder threads reach them through
    `call_soon_threadsafe`. `_lock` orders start, stop and takeover, which run in the threadpool.
    """

    def __init__(self, pipeline: VideoConditionalPipeline, settings: ServeSettings, config_path: str | None = None):
        self.pipeline = pipeline
        self.base_cfg = pipeline.cfg
        self.settings = settings
        self.config_path = config_path
        self.run: LiveRun | None = None
        self.owner: str | None = None
        self.upload: tuple[str, torch.Tensor, str] | None = None  # id, video, what it was
        self.viewers: set[Viewer] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        (settings.work_dir / "uploads").mkdir(parents=True, exist_ok=True)

    # -- commands ----------------------------------------------------------------------------------

    def check_prompt(self, prompt: Any) -> str:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ServeError("the prompt is empty")
        if len(prompt) > self.settings.max_prompt_chars:
            raise ServeError(f"the prompt has {len(prompt)} characters; at most {self.settings.max_prompt_chars}")
        return prompt.strip()

    def start(self, client: str, body: dict[str, Any]) -> dict[str, Any]:
        """Start a session (the caller steers it); a running session is replaced only by its own page."""
        prompt = self.check_prompt(body.get("prompt"))
        seed, length = _integer(body.get("seed", 0), "seed"), body.get("length")
        length = None if length is None else _integer(length, "length")
        with self._lock:
            if self.active and self.owner != client:
                raise ServeError("busy: another page steers the running session (take over to steer it)", 409)
            video, kind = None, ""
            if body.get("upload"):
                if self.upload is None or self.upload[0] != body["upload"]:
                    raise ServeError("that upload is gone: upload the file again")
                _, video, kind = self.upload
            conditioning = 0
            if video is not None:
                used = self.pipeline.conditioning_video_frames(video)
                conditioning = derive_geometry(self.base_cfg).latents_for_video_frames(used)
            image = video is not None and video.shape[2] == 1
            session_cfg = session_config(self.base_cfg, length, conditioning, image)
            if self.run is not None:
                self.run.stop()
                self.run.join()  # the old rollout ends at its next block boundary; its mp4 is then closed
            request = RunRequest(prompt, seed, length, video, kind)
            output = self.settings.work_dir / "session.mp4"
            self.run = LiveRun(
                self.pipeline, request, session_cfg, self.settings, output, self.push_frame, self.changed
            )
            self.owner = client
            self.upload = None
            self.run.start()
        conditioned = f"{kind}, " if kind else ""
        logger.info("session started: seed %d, %s, %s%r", seed, _length_text(length), conditioned, prompt)
        return {"ok": True}

    def command(self, client: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """prompt / pause / resume / stop from the page that steers the session."""
        prompt = self.check_prompt(body.get("prompt")) if name == "prompt" else None
        with self._lock:
            run = self.run
            if run is None or run.done:
                raise ServeError("no session is running: start one", 409)
            if self.owner != client:
                raise ServeError("another page steers this session (take over to steer it)", 409)
        if name == "prompt":
            run.set_prompt(prompt)
            logger.info("next prompt at the next block: %r", prompt)
        else:
            getattr(run, name)()
            logger.info("session %s", {"pause": "paused", "resume": "resumed", "stop": "stopping"}[name])
        return {"ok": True}

    def take_over(self, client: str) -> dict[str, Any]:
        with self._lock:
            self.owner = client
        logger.info("a page took over the session")
        self.changed()
        return {"ok": True}

    @property
    def active(self) -> bool:
        return self.run is not None and not self.run.done

    def receive_upload(self, path: Path) -> dict[str, Any]:
        """Decode an uploaded file (a server-owned temp file) into the next session's conditioning."""
        if self.base_cfg.num_conditioning_frames == 0:
            raise ServeError("this server's config has num_conditioning_frames=0: it cannot condition on an upload")
        video, kind = decode_upload(path, self.base_cfg)
        upload_id = secrets.token_hex(8)
        with self._lock:
            self.upload = (upload_id, video, kind)
        logger.info("upload accepted: %s", kind)
        return {"upload": upload_id, "kind": kind}

    # -- state and frames to the pages ---------------------------------------------------------------

    def state(self, client: str | None) -> dict[str, Any]:
        cfg = self.base_cfg
        run = self.run
        return {
            "type": "state",
            "session": None if run is None else run.state(),
            "you_steer": run is not None and self.owner == client,
            "viewers": len(self.viewers),
            "config": {
                "fps": int(cfg.fps),
                "height": cfg.height,
                "width": cfg.width,
                "num_output_frames": cfg.num_output_frames,
                "num_conditioning_frames": cfg.num_conditioning_frames,
                "frames_per_block": cfg.num_frame_per_block,
                "no_limit": cfg.model_kwargs.local_attn_size != -1,
                "max_prompt_chars": self.settings.max_prompt_chars,
                "max_upload_bytes": self.settings.max_upload_bytes,
            },
        }

    def push_frame(self, packet: bytes) -> None:
        """From the encoder thread: queue a frame for every page (never blocks)."""
        self._on_loop(self._queue_frame, packet)

    def changed(self) -> None:
        """From any thread: every page gets the state again."""
        self._on_loop(self._queue_state)

    def _on_loop(self, callback: Callable[..., None], *args: Any) -> None:
        if self.loop is None:
            return
        # At shutdown the loop may close while a worker still finishes its block: nobody is left to tell.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(callback, *args)

    def _queue_frame(self, packet: bytes) -> None:
        for viewer in self.viewers:
            if len(viewer.frames) == viewer.frames.maxlen:
                viewer.dropped += 1
            viewer.frames.append(packet)
            viewer.wake.set()

    def _queue_state(self) -> None:
        for viewer in self.viewers:
            viewer.state_due = True
            viewer.wake.set()

    async def stream(self, websocket, viewer: Viewer) -> None:
        """Send one page its state and frames as they come, for as long as it stays."""
        while True:
            await viewer.wake.wait()
            viewer.wake.clear()
            if viewer.state_due:
                viewer.state_due = False
                await websocket.send_text(json.dumps(self.state(viewer.client)))
            while viewer.frames:
                await websocket.send_bytes(viewer.frames.popleft())


def _integer(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ServeError(f"{name} must be an integer, got {value!r}"[:200])
    try:
        return int(value)
    except ValueError:
        raise ServeError(f"{name} must be an integer, got {value!r}"[:200]) from None


def _length_text(length: int | None) -> str:
    return "no limit" if length is None else f"{length} latent frames"


# -- HTTP and WebSocket ----------------------------------------------------------------------------

WEB_FILES = {
    "": ("index.html", "text/html"),
    "app.js": ("app.js", "text/javascript"),
    "style.css": ("style.css", "text/css"),
}
MAX_COMMAND_BYTES = 16 << 10
COMMANDS = ("prompt", "pause", "resume", "stop", "takeover")


def web_file(name: str) -> bytes:
    """One of the page's files, from the package (names from `WEB_FILES` only, never from a request)."""
    return resources.files("longlive").joinpath("web", name).read_bytes()


class AccessGuard:
    """ASGI middleware: the token, the Host of a loopback server, the page's header on POSTs, the Origin
    of WebSockets. A refused request gets one log line and 401 (or 403), WebSockets included."""

    def __init__(self, app, settings: ServeSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        connection = HTTPConnection(scope)
        status, reason = self.refusal(connection)
        if status is None:
            return await self.app(scope, receive, send)
        logger.warning("refused %s %s: %s", scope["type"], scope["path"], reason)
        response = JSONResponse({"error": reason}, status_code=status)
        if scope["type"] == "http":
            return await response(scope, receive, send)
        if "websocket.http.response" in scope.get("extensions", {}):
            await receive()  # the connect message
            return await response(scope, receive, send)  # Starlette sends it as the handshake's denial
        await receive()
        await send({"type": "websocket.close", "code": 1008})

    def refusal(self, connection) -> tuple[int | None, str]:
        host = (connection.headers.get("host") or "").rsplit(":", 1)[0]
        if is_loopback(self.settings.host) and host and not is_loopback(host):
            return 403, f"Host {host[:64]!r} is not this loopback server's"
        if self.settings.token is not None:
            given = connection.query_params.get("token") or ""
            auth = connection.headers.get("authorization") or ""
            if auth.startswith("Bearer "):
                given = auth[len("Bearer ") :]
            if not secrets.compare_digest(given.encode(), self.settings.token.encode()):
                return 401, "a valid token is required (open the URL printed at start, with its ?token=...)"
        if connection.scope["type"] == "http" and connection.scope["method"] == "POST":
            if CLIENT_HEADER not in connection.headers:
                return 403, f"POSTs need the page's {CLIENT_HEADER} header"
        origin = connection.headers.get("origin")
        if (
            connection.scope["type"] == "websocket"
            and origin
            and origin.split("://", 1)[-1] != connection.headers.get("host")
        ):
            return 403, f"WebSocket from another origin ({origin[:64]})"
        return None, ""


def build_app(server: LiveServer):
    """The Starlette app: the page, the JSON API, the WebSocket stream, behind `AccessGuard`."""
    settings = server.settings

    def client_of(request: Request) -> str:
        return request.headers.get(CLIENT_HEADER, "")[:64]

    async def json_body(request: Request) -> dict[str, Any]:
        if int(request.headers.get("content-length") or 0) > MAX_COMMAND_BYTES:
            raise ServeError("the request is too large", 413)
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            raise ServeError("the request body must be JSON") from None
        if not isinstance(body, dict):
            raise ServeError("the request body must be a JSON object")
        return body

    async def page(request: Request) -> Response:
        if request.path_params.get("name", "") not in WEB_FILES:
            raise ServeError("not found", 404)
        name, media = WEB_FILES[request.path_params.get("name", "")]
        return Response(web_file(name), media_type=media, headers={"Cache-Control": "no-store"})

    async def state(request: Request) -> Response:
        return JSONResponse(server.state(client_of(request)))

    async def start(request: Request) -> Response:
        body = await json_body(request)
        return JSONResponse(await run_in_threadpool(server.start, client_of(request), body))

    async def command(request: Request) -> Response:
        body = await json_body(request)
        name = request.path_params["name"]
        if name not in COMMANDS:
            raise ServeError(f"no such command: {name[:40]}", 404)
        if name == "takeover":
            return JSONResponse(server.take_over(client_of(request)))
        return JSONResponse(await run_in_threadpool(server.command, client_of(request), name, body))

    async def upload(request: Request) -> Response:
        limit = settings.max_upload_bytes
        if int(request.headers.get("content-length") or 0) > limit:
            raise ServeError(f"the upload is larger than the limit of {limit >> 20} MiB", 413)
        handle = tempfile.NamedTemporaryFile(dir=settings.work_dir / "uploads", prefix="upload-", delete=False)
        path = Path(handle.name)
        try:
            size = 0
            with handle:
                try:
                    async for chunk in request.stream():
                        size += len(chunk)
                        if size > limit:
                            raise ServeError(f"the upload is larger than the limit of {limit >> 20} MiB", 413)
                        handle.write(chunk)
                except ClientDisconnect:
                    raise ServeError(f"the upload was cut off after {size} bytes") from None
            if size == 0:
                raise ServeError("the upload is empty")
            return JSONResponse(await run_in_threadpool(server.receive_upload, path))
        finally:
            path.unlink(missing_ok=True)

    async def video(request: Request) -> Response:
        run = server.run
        if run is None:
            raise ServeError("no session yet", 404)
        path = settings.work_dir / f"download-{secrets.token_hex(8)}.mp4"
        try:
            await run_in_threadpool(run.save_video, path)
        except InputError as err:
            raise ServeError(str(err), 404) from None
        headers = {"Content-Disposition": 'attachment; filename="longlive_session.mp4"'}
        return FileResponse(path, media_type="video/mp4", headers=headers, background=BackgroundTask(path.unlink))

    async def timeline(request: Request) -> Response:
        if server.run is None:
            raise ServeError("no session yet", 404)
        line = json.dumps(server.run.replay_record(server.config_path)) + "\n"
        headers = {"Content-Disposition": 'attachment; filename="timeline.jsonl"'}
        return Response(line, media_type="application/x-ndjson", headers=headers)

    async def stream(websocket: WebSocket) -> None:
        await websocket.accept()
        viewer = Viewer(websocket.query_params.get("client", "")[:64], settings.viewer_frames)
        server.viewers.add(viewer)
        server.changed()  # everyone's viewer count
        sender = asyncio.create_task(server.stream(websocket, viewer))
        receiver = asyncio.create_task(websocket.receive())
        try:
            # The page sends nothing: the receive ends when it leaves; the sender when a send fails.
            await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sender, receiver):
                task.cancel()
            server.viewers.discard(viewer)
            server.changed()
            error = sender.exception() if sender.done() and not sender.cancelled() else None
            failed = error is not None and not isinstance(error, WebSocketDisconnect)
            how = f"send failed: {_first_line(error)}" if failed else "left"
            logger.info("a page %s (%d frames dropped for it)", how, viewer.dropped)
            with contextlib.suppress(Exception):
                await websocket.close()

    async def refused(request: Request, err: ServeError) -> Response:
        logger.warning("%s %s: %s", request.method, request.url.path, err)
        return JSONResponse({"error": str(err)}, status_code=err.status)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        server.loop = asyncio.get_running_loop()
        yield
        if server.run is not None:
            server.run.stop(wait=30)

    routes = [
        Route("/", page),
        Route("/static/{name:str}", page),
        Route("/api/state", state),
        Route("/api/start", start, methods=["POST"]),
        Route("/api/upload", upload, methods=["POST"]),
        Route("/api/{name:str}", command, methods=["POST"]),
        Route("/api/video.mp4", video),
        Route("/api/timeline.jsonl", timeline),
        WebSocketRoute("/ws", stream),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(AccessGuard, settings=settings)],
        exception_handlers={ServeError: refused},
        lifespan=lifespan,
    )


def serve(pipeline: VideoConditionalPipeline, settings: ServeSettings, config_path: str | None = None) -> None:
    """Run the web server until interrupted; the URL (with the token, when there is one) goes to stderr."""
    import sys

    import uvicorn

    settings = resolve_token(settings)
    app = build_app(LiveServer(pipeline, settings, config_path))
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    query = f"?token={settings.token}" if settings.token else ""
    print(f"longlive serve: open http://{host}:{settings.port}/{query}", file=sys.stderr, flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", ws="websockets-sansio")
