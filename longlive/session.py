"""A live session: one rollout you steer while it streams (LongLive's interactive mode, live).

The generation loop is the pipeline's (`stream_prompts`); the session asks it for one block at a time
and answers its per-block question "which prompt?" with the prompt typed last. Threads:

    generation thread (`run`, or the caller of `step`)    command threads (a terminal, a UI, tests)
      the previous block's cache pass; at the boundary:     set_prompt / pause / resume / save / quit:
      pending prompt -> current; one block: denoise,        a field or an event under a lock, nothing
      decode; frames -> encoder queue                       waits for the GPU (save finishes the current
                                                            mp4 segment and joins the segments)
    encoder thread: queue -> ffmpeg -> mp4 segment on disk; the block's last frame -> preview PNG

So a new prompt takes effect at the next block boundary, and the GPU sets the pace. `step` runs one
block in the caller's thread, which makes a session scriptable (tests drive it block by block).

A session runs until `quit` unless `max_frames` is set, and its memory stays flat however long it runs:
the frames live only on disk, as the mp4 segments of a `SegmentedVideo`, and `save` (or `video_bytes`,
for a server) joins them into one mp4 of every frame so far.
"""

from __future__ import annotations

import logging
import math
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import torch

from longlive.kv_cache import CrossAttentionCache
from longlive.pipeline import Block, BlockResult, InputError, Switch, VideoConditionalPipeline
from longlive.text_encoder import RecentlyUsed
from longlive.video_io import SegmentedVideo

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionStatus:
    """Where a session stands, for a status line."""

    block: int  # index of the latest finished block, -1 before the first
    latent_frames: int
    frames: int  # video frames made so far
    fps: float  # video frames per second of generation time (pauses excluded)
    paused: bool
    done: bool
    prompt: str

    def line(self) -> str:
        state = "done" if self.done else "paused" if self.paused else "running"
        return (
            f"block {self.block} | {self.frames} frames ({self.latent_frames} latent) | {self.fps:.2f} fps | "
            f"{state} | {self.prompt}"
        )


class Session:
    """A rollout that starts from a prompt (or a video and a prompt) and takes new prompts as it goes.

    Frames are encoded as they come into mp4 segments in `.{output's name}.segments/` beside `output`
    (a temporary folder without `output`); `output` is written when the session ends, `save` writes
    every frame so far at any time. `preview` is the latest frame as a PNG. Each prompt's cross-attention
    cache is computed once and kept while it is among the latest few (`texts`, a `RecentlyUsed`). The
    session ends at `quit`, or after `max_frames` latent frames (conditioning included) when set; the
    config's `num_output_frames` is for batch jobs and does not limit a session.
    """

    def __init__(
        self,
        pipeline: VideoConditionalPipeline,
        prompt: str,
        video: torch.Tensor | None = None,
        seed: int = 0,
        output: str | Path | None = None,
        preview: str | Path | None = None,
        recache: bool | None = None,
        max_frames: int | None = None,
    ) -> None:
        _check_limit(pipeline, max_frames, video)
        self.pipeline = pipeline
        self.max_frames = max_frames
        self.fps_out = int(pipeline.cfg.fps)
        self.output = None if output is None else Path(output)
        self.preview = None if preview is None else Path(preview)
        # Bounded: a session may run for hours under many prompts, and each cache is per layer K/V over the
        # whole text length (about 94 MB at the 1.3B size, on the GPU); a prompt typed again is encoded again.
        self.texts: RecentlyUsed[CrossAttentionCache] = RecentlyUsed(limit=8)
        self.switches: list[Switch] = []  # one per prompt switch (as many as the user types)
        self._prompt = _checked(prompt)
        self._pending: str | None = None
        self._lock = threading.Lock()
        self._running = threading.Event()
        self._running.set()
        self._quit = threading.Event()
        self._frames = 0  # video frames made so far
        self._block = -1
        self._latent_frames = 0
        self._seconds = 0.0
        self._done = False
        self._closed = threading.Event()  # set once `output` is written and the segments are gone
        if self.output is None:
            folder = Path(tempfile.mkdtemp(prefix="longlive-session-"))
        else:
            folder = self.output.with_name(f".{self.output.stem}.segments")
            shutil.rmtree(folder, ignore_errors=True)  # a previous session's leftovers
        self.record = SegmentedVideo(folder, self.fps_out, preview=self.preview)
        end = math.inf if max_frames is None else max_frames
        self._stream = pipeline.stream_prompts(
            self._prompt_at, video, seed=seed, decode=True, recache=recache, texts=self.texts, num_output_frames=end
        )

    # -- commands (any thread) -------------------------------------------------------------------

    def set_prompt(self, prompt: str) -> None:
        """Switch to `prompt` at the next block boundary (the last one set before it wins)."""
        prompt = _checked(prompt)
        with self._lock:
            self._pending = prompt

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def quit(self) -> None:
        """Stop at the next block boundary."""
        self._quit.set()
        self._running.set()  # wake a paused loop so it can end

    def save(self, path: str | Path) -> Path:
        """Write every frame so far to `path` (an mp4, atomically), from the calling thread.

        The current mp4 segment is finished (waiting for the blocks queued to the encoder) and the
        segments are joined by stream copy: no re-encoding, nothing held in memory. After the end, it
        copies `output`.
        """
        if self.status().done:
            self._closed.wait()  # `close` may still be writing `output`
            if self.output is None or not self.output.is_file():
                raise InputError("the session is over and kept no video (it had no output)")
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.output, path)
            return path
        try:
            path, frames = self.record.save(path)
        except ValueError as err:  # nothing appended yet
            raise InputError(str(err)) from None
        logger.info("saved %d frames to %s", frames, path)
        return path

    def video_bytes(self) -> bytes:
        """Every frame so far as the bytes of one mp4 (what a web server sends), as `save` makes it."""
        with tempfile.TemporaryDirectory(prefix="longlive-save-") as folder:
            return self.save(Path(folder) / "video.mp4").read_bytes()

    @property
    def prompt(self) -> str:
        with self._lock:
            return self._prompt

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def status(self) -> SessionStatus:
        with self._lock:
            frames = self._frames
            return SessionStatus(
                block=self._block,
                latent_frames=self._latent_frames,
                frames=frames,
                fps=frames / self._seconds if self._seconds > 0 else 0.0,
                paused=self.paused,
                done=self._done,
                prompt=self._prompt,
            )

    # -- generation (one thread) -----------------------------------------------------------------

    def step(self) -> BlockResult | None:
        """Generate the next block in the calling thread; None when the session is over."""
        if self._done:
            return None
        tick = time.perf_counter()
        result = next(self._stream, None)
        if result is None:
            self.close()
            return None
        frames = result.frames[0]  # [3, n, H, W]
        self.record.append(frames)  # encoded (and the preview written) in the background
        with self._lock:
            self._frames += frames.shape[1]
            self._block = result.block.index
            self._latent_frames = result.block.end
            self._seconds += time.perf_counter() - tick
        if result.switch is not None:
            self.switches.append(result.switch)
        return result

    def run(self, on_block: Callable[[SessionStatus], None] | None = None) -> SessionStatus:
        """Generate until the end or `quit`, waiting while paused; `on_block` gets the status after each block."""
        try:
            while not self._quit.is_set():
                if not self._running.wait(timeout=0.1):
                    continue
                if self._quit.is_set() or self.step() is None:
                    break
                if on_block is not None:
                    on_block(self.status())
        finally:
            self.close()
        return self.status()

    def start(self, on_block: Callable[[SessionStatus], None] | None = None) -> threading.Thread:
        """`run` in a background thread (join it, or call `quit`)."""
        thread = threading.Thread(target=self.run, args=(on_block,), name="longlive-session", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        """Release the rollout, write `output` and remove the segments (idempotent; from the generation
        thread, or use `quit`)."""
        with self._lock:
            if self._done:
                return
            self._done = True
        self._stream.close()
        try:
            if self.output is not None and self.record.frames:
                path, frames = self.record.save(self.output)
                logger.info("session video: %d frames in %s", frames, path)
        finally:
            self.record.remove()
            self._closed.set()

    def _prompt_at(self, block: Block) -> str:
        """The pipeline's question at each block boundary: the pending prompt becomes current."""
        with self._lock:
            if self._pending is not None:
                self._prompt, self._pending = self._pending, None
            return self._prompt


def _check_limit(pipeline: VideoConditionalPipeline, max_frames: int | None, video: torch.Tensor | None) -> None:
    """Global attention caches the whole rollout: only a limited session within `num_output_frames` fits.
    A limit must leave frames to generate after the conditioning (whose blocks are fed whatever the limit)."""
    cfg = pipeline.cfg
    if max_frames is not None and max_frames < 1:
        raise InputError(f"max_frames={max_frames}: give a positive number of latent frames, or none for no end")
    conditioning = pipeline.geometry.latents_for_video_frames(pipeline.conditioning_video_frames(video))
    if max_frames is not None and max_frames <= conditioning:
        raise InputError(
            f"max_frames={max_frames} latent frames leaves nothing to generate after the video's "
            f"{conditioning} conditioning latent frames"
        )
    if cfg.model_kwargs.local_attn_size == -1 and (max_frames is None or max_frames > cfg.num_output_frames):
        raise InputError(
            "global attention (model_kwargs.local_attn_size=-1) caches every frame: a session needs "
            f"max_frames <= num_output_frames={cfg.num_output_frames}, or a local window"
        )


def _checked(prompt: str) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("the prompt is empty")
    return prompt.strip()


# -- the terminal ----------------------------------------------------------------------------------

COMMANDS = "a line is a new prompt; /pause, /resume, /save PATH, /quit"


def handle_line(session: Session, line: str, out: TextIO | None = None) -> bool:
    """Apply one typed line to `session`, answering on `out` (stderr); False once the session should end."""
    out = out or sys.stderr
    line = line.strip()
    if not line:
        return True
    command, _, argument = line.partition(" ")
    try:
        if command == "/quit":
            session.quit()
            return False
        if command == "/pause":
            session.pause()
        elif command == "/resume":
            session.resume()
        elif command == "/save":
            if not argument.strip():
                raise InputError("/save needs a path, e.g. /save clip.mp4")
            print(f"saved {session.save(argument.strip())}", file=out, flush=True)
        elif command.startswith("/"):
            raise InputError(f"unknown command {command} ({COMMANDS})")
        else:
            session.set_prompt(line)
            print(f"next block: {line}", file=out, flush=True)
    except InputError as err:
        print(f"longlive: {err}", file=out, flush=True)
    return True


def run_terminal(session: Session, lines: Iterable[str], out: TextIO | None = None) -> SessionStatus:
    """Generate in this thread while another reads `lines` (stdin) as commands; a status line per block.

    The end of the input quits a session without `max_frames`; one with a limit runs on to it."""
    out = out or sys.stderr

    def read() -> None:
        for line in lines:
            try:
                if not handle_line(session, line, out):
                    return
            except Exception as err:  # a failed command (a save to a full disk) must not end the input
                print(f"longlive: {line.strip()} failed: {err or type(err).__name__}", file=out, flush=True)
                if not isinstance(err, OSError):  # not the disk or the encoder: our bug, keep its traceback
                    logger.exception("session command %r failed", line.strip())
        if session.max_frames is None:  # the input is over (Ctrl-D): nothing else could end the session
            session.quit()

    threading.Thread(target=read, name="longlive-session-input", daemon=True).start()
    print(f"longlive session: {COMMANDS}", file=out, flush=True)
    status = session.run(on_block=lambda s: print(s.line(), file=out, flush=True))
    print(f"session over: {status.line()}", file=out, flush=True)
    return status
