"""`longlive serve`: a web page that steers one live `Session` (start, watch, prompt, pause, download).

    worker thread                       encoder thread              event loop (uvicorn)
      session.step() one block            uint8 frames -> JPEG        per viewer: a bounded deque of
      -> uint8 frames, timeline,  ---->   (bounded queue: full   ---> frames (oldest dropped when
      latency, status                     drops the block)            full) + the latest state; one
      (never waits on a client)                                       sender task per WebSocket

The GPU thread only hands frames on without blocking; JPEG encoding runs beside it, and each viewer
gets what it can take: a slow viewer loses frames, it never holds up the rollout or the other viewers.
The run (session, worker, encoder, uploads) is `longlive/live_run.py`; this module is the web around it.

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
import secrets
import tempfile
import threading
from collections import deque
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, HTTPConnection, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from longlive.config import derive_geometry
from longlive.live_run import (
    FRAME_HEADER,
    LiveRun,
    RunRequest,
    ServeError,
    ServeSettings,
    check_length,
    decode_upload,
    first_line,
)
from longlive.pipeline import InputError, VideoConditionalPipeline

__all__ = ["FRAME_HEADER", "LiveServer", "ServeError", "ServeSettings", "build_app", "resolve_token", "serve"]

logger = logging.getLogger(__name__)

CLIENT_HEADER = "x-longlive-client"
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


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
            check_length(self.base_cfg, length, conditioning)
            if self.run is not None:
                self.run.stop()
                self.run.join()  # the old rollout ends at its next block boundary; its mp4 is then closed
            request = RunRequest(prompt, seed, length, video, kind)
            output = self.settings.work_dir / "session.mp4"
            self.run = LiveRun(self.pipeline, request, self.settings, output, self.push_frame, self.changed)
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
        # The session joins its mp4 segments into a file (stream copy) and the file is streamed from disk:
        # memory stays flat however long the session ran (`Session.video_bytes` would hold the whole mp4).
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
            how = f"send failed: {first_line(error)}" if failed else "left"
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
