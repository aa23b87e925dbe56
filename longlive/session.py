"""A live session: one rollout you steer while it streams (LongLive's interactive mode, live).

The generation loop is the pipeline's (`stream_prompts`); the session asks it for one block at a time
and answers its per-block question "which prompt?" with the prompt typed last. Threads:

    generation thread (`run`, or the caller of `step`)    command threads (a terminal, a UI, tests)
      the previous block's cache pass; at the boundary:     set_prompt / pause / resume / save / quit:
      pending prompt -> current; one block: denoise,        a field or an event under a lock, nothing
      decode; frames -> growing mp4, preview PNG, list      waits for the GPU (save copies the frame list)

So a new prompt takes effect at the next block boundary, and the GPU sets the pace. `step` runs one
block in the caller's thread, which makes a session scriptable (tests drive it block by block).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import torch

from longlive.kv_cache import CrossAttentionCache
from longlive.pipeline import Block, BlockResult, InputError, Switch, VideoConditionalPipeline
from longlive.video_io import open_video_writer, tensor_to_uint8, write_frames, write_image

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

    `output` grows as blocks finish (a fragmented mp4 players can open while it grows); `preview` is
    the latest frame as a PNG. Every decoded frame is also kept in memory as uint8, for `save`.
    Each prompt's embeddings and cross-attention cache are computed once and kept (`texts`).
    The session ends after `num_output_frames` latent frames, or at `quit`.
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
    ) -> None:
        self.pipeline = pipeline
        self.fps_out = int(pipeline.cfg.fps)
        self.output = None if output is None else Path(output)
        self.preview = None if preview is None else Path(preview)
        self.texts: dict[str, CrossAttentionCache] = {}
        self.switches: list[Switch] = []
        self.latents: list[torch.Tensor] = []  # per block [F, C, h, w] on the CPU
        self._prompt = _checked(prompt)
        self._pending: str | None = None
        self._lock = threading.Lock()
        self._running = threading.Event()
        self._running.set()
        self._quit = threading.Event()
        self._frames: list[np.ndarray] = []  # uint8 [H, W, 3], every frame so far
        self._block = -1
        self._latent_frames = 0
        self._seconds = 0.0
        self._done = False
        self._writer = None if self.output is None else open_video_writer(self.output, self.fps_out, growing=True)
        self._stream = pipeline.stream_prompts(
            self._prompt_at, video, seed=seed, decode=True, recache=recache, texts=self.texts
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
        """Write the frames so far to `path` (an mp4), now, from the calling thread."""
        with self._lock:
            frames = list(self._frames)
        if not frames:
            raise InputError("no frames yet: nothing to save")
        path = write_frames(path, frames, self.fps_out)
        logger.info("saved %d frames to %s", len(frames), path)
        return path

    @property
    def prompt(self) -> str:
        with self._lock:
            return self._prompt

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def status(self) -> SessionStatus:
        with self._lock:
            frames = len(self._frames)
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
        frames = tensor_to_uint8(result.frames[0])  # [n, H, W, 3]
        if self._writer is not None:
            for frame in frames:
                self._writer.append_data(frame)
        if self.preview is not None and len(frames):
            write_image(self.preview, frames[-1])
        with self._lock:
            self._frames.extend(frames)
            self._block = result.block.index
            self._latent_frames = result.block.end
            self._seconds += time.perf_counter() - tick
        self.latents.append(result.latents[0].float().cpu())
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
        """Finish the mp4 and release the rollout (idempotent; from the generation thread, or use `quit`)."""
        with self._lock:
            self._done = True
        self._stream.close()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _prompt_at(self, block: Block) -> str:
        """The pipeline's question at each block boundary: the pending prompt becomes current."""
        with self._lock:
            if self._pending is not None:
                self._prompt, self._pending = self._pending, None
            return self._prompt


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
    """Generate in this thread while another reads `lines` (stdin) as commands; a status line per block."""
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

    threading.Thread(target=read, name="longlive-session-input", daemon=True).start()
    print(f"longlive session: {COMMANDS}", file=out, flush=True)
    status = session.run(on_block=lambda s: print(s.line(), file=out, flush=True))
    print(f"session over: {status.line()}", file=out, flush=True)
    return status
