"""Measuring what a demo model generates (tests/test_demo_model.py, scripts/eval_demo.py).

A run conditions on the first frames of a demo-world video under its caption and rolls out under
prompt2; `measure` tracks the shape in the generated frames (the foreground centroid, so a shape is
found even where its colour is off; the palette colour nearest its mean colour) against the rendered
truth. `evaluate` does that over random clips, with and without the conditioning frames, so a model's
progress (and the engine's part in it) is one JSON report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import pairwise

import numpy as np
import torch

from longlive.demo_world import (
    DIRECTIONS,
    ROOM_FRAMES,
    SPEEDS,
    Change,
    Clip,
    DemoWorld,
    Scene,
    blob_sizes,
    caption,
    change_caption,
    dominant_colours,
    foreground_centroid,
    foreground_mask,
    on_lattice,
    render,
    sample_change,
    sample_scene,
    world_scale,
)
from longlive.pipeline import PromptSchedule, VideoConditionalPipeline
from longlive.vae import StreamingVAE

PATH_FRAMES = 12  # generated frames the path error is measured over (the first generated block)


@dataclass
class Report:
    """What the generated frames (those after the conditioning ones) show, against the rendered truth."""

    path_error: float  # px: mean centroid distance from the truth over the first PATH_FRAMES generated frames
    velocity: tuple[float, float]  # (vy, vx) px/frame, least squares over the measured generated frames
    true_velocity: tuple[float, float]  # the same, of the truth
    colours: list[str | None]  # dominant colour of each generated frame
    window_errors: list[float]  # px: mean centroid distance per PATH_FRAMES generated frames, over them all

    def along(self, direction: tuple[int, int]) -> float:
        """Velocity along a unit `direction` (dy, dx)."""
        return self.velocity[0] * direction[0] + self.velocity[1] * direction[1]

    def across(self, direction: tuple[int, int]) -> float:
        return self.velocity[0] * direction[1] - self.velocity[1] * direction[0]

    def colour_share(self, colour: str, start: int = 0, stop: int | None = PATH_FRAMES) -> float:
        """Share of generated frames [start, stop) whose shape is `colour` (stop None: to the end)."""
        span = self.colours[start:stop]
        return sum(c == colour for c in span) / max(len(span), 1)


def slope(values: torch.Tensor) -> float:
    """Least-squares slope of values [N] against the frame index; NaN entries (frames without a shape) are
    skipped, and fewer than 2 left give NaN."""
    ok = ~values.isnan()
    if ok.sum() < 2:
        return float("nan")
    t = torch.arange(len(values), dtype=values.dtype)[ok]
    x, y = t - t.mean(), values[ok] - values[ok].mean()
    return float((x * y).sum() / (x * x).sum())


def velocity(centroids: torch.Tensor) -> tuple[float, float]:
    """Least-squares slope (vy, vx) of centroids [N, 2] against the frame index; NaN rows are skipped."""
    return slope(centroids[:, 0]), slope(centroids[:, 1])


def centred(scene: Scene, first: int, then: int, height: int, width: int, turn: str | None = None) -> Scene:
    """The scene started where its path over `first` frames its way, then `then` frames `turn`'s way, is
    centred in the frame (on the world's lattice): no wall is met, so a velocity fitted there sees no bounce.
    A path longer than the frame has room for is an error, not a scene that starts outside the frame."""
    leg = np.array(DIRECTIONS[scene.direction]) * scene.speed * first
    end = leg + np.array(DIRECTIONS[turn or scene.direction]) * scene.speed * then
    corners = np.stack([np.zeros(2), leg, end])
    span = corners.max(0) - corners.min(0) + scene.size
    if (span > np.array([height, width])).any():
        needs = f"{span[0]:.0f}x{span[1]:.0f} px"
        raise ValueError(f"a path of {first} + {then} frames at {scene.speed} px/frame needs {needs}: {height}x{width}")
    start = np.array([height, width]) / 2 - (corners.min(0) + corners.max(0)) / 2
    return on_lattice(replace(scene, position=(float(start[0]), float(start[1]))), height, width)


def speed_ratios(pipe: VideoConditionalPipeline, clips_per_speed: int = 6, seed: int = 0) -> dict[str, dict]:
    """Generated speed over the true one along the motion (least squares over the first PATH_FRAMES
    generated frames), per world speed (`SPEEDS`): random scenes turned to each direction in turn, set
    at that speed and centred so that no wall is met. A model that cannot tell the speeds apart from
    the conditioning frames pulls them toward the middle one (above 1 for the slowest, below for the
    fastest; the cell world has one speed); over a long rollout that error is the path's drift (issue 19)."""
    rng = np.random.default_rng(seed)
    cfg = pipe.cfg
    directions = list(DIRECTIONS)
    ratios: dict[str, list[float]] = {}
    for i in range(clips_per_speed * len(SPEEDS)):
        world_speed = SPEEDS[i % len(SPEEDS)]
        speed = world_speed * world_scale(cfg.height, cfg.width)
        way = directions[(i // len(SPEEDS)) % len(directions)]
        scene = sample_scene(rng, cfg.height, cfg.width)
        scene = replace(scene, velocity=tuple(float(v) * speed for v in DIRECTIONS[way]))
        scene = centred(scene, cfg.num_conditioning_frames, PATH_FRAMES, cfg.height, cfg.width)
        report = measure(pipe, scene, seed=i, velocity_frames=PATH_FRAMES)
        ratios.setdefault(f"{world_speed:g}", []).append(float(np.dot(report.velocity, DIRECTIONS[way])) / speed)
    return {
        speed: {"mean": round(float(np.mean(v)), 3), "sd": round(float(np.std(v)), 3), "clips": len(v)}
        for speed, v in ratios.items()
    }


def measure(
    pipe: VideoConditionalPipeline,
    scene: Scene,
    change: Change | None = None,
    conditioning: bool = True,
    seed: int = 0,
    velocity_frames: int = 24,
) -> Report:
    """Condition on the scene's first `num_conditioning_frames` under its caption, roll out under prompt2
    (the change caption, or the caption again), and measure the generated frames."""
    cfg = pipe.cfg
    num_frames, first = 4 * cfg.num_output_frames - 3, cfg.num_conditioning_frames
    truth = render(scene, num_frames, cfg.height, cfg.width, change)
    prompt1 = caption(scene)
    prompt2 = prompt1 if change is None else change_caption(scene, change)
    video = truth[None, :, :first] if conditioning else None
    frames = pipe(prompt1, prompt2, video, seed=seed).frames[0][:, first:]
    generated, expected = foreground_centroid(frames), foreground_centroid(truth[:, first:])
    distance = (generated - expected).norm(dim=1)  # [N]: NaN where the shape was not found
    return Report(
        path_error=float(distance[:PATH_FRAMES].nanmean()),
        velocity=velocity(generated[:velocity_frames]),
        true_velocity=velocity(expected[:velocity_frames]),
        colours=dominant_colours(frames),
        window_errors=[float(window.nanmean()) for window in distance.split(PATH_FRAMES)],
    )


def evaluate(pipe: VideoConditionalPipeline, num_clips: int = 12, seed: int = 0) -> dict[str, dict[str, float]]:
    """Random clips, a third each continued, changing colour and changing direction at the first generated
    frame, each run with and without its conditioning frames. Per kind and mode, means of: `path_error`
    (px), `velocity_error` (px/frame, first PATH_FRAMES generated frames; a bounce inside them counts),
    `colour_first_block` (share of the first PATH_FRAMES generated frames in the expected colour) and
    `colour_later` (the same over the rest: the drift); and `path_error_per_window`, the path error of each
    PATH_FRAMES generated frames in turn (a long rollout, `num_output_frames`, shows where it breaks)."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list[list[float]]] = {}
    windows: dict[str, list[list[float]]] = {}
    cfg = pipe.cfg
    for i in range(num_clips):
        kind = ("continue", "colour", "direction")[i % 3]
        scene = sample_scene(rng, cfg.height, cfg.width)
        change = None
        while kind != "continue" and (change is None or (change.colour is None) != (kind == "direction")):
            change = sample_change(rng, scene, cfg.num_conditioning_frames, cfg.height, cfg.width)
        colour = change.colour if change is not None and change.colour else scene.colour
        for conditioning in (True, False):
            report = measure(pipe, scene, change, conditioning, seed=i, velocity_frames=PATH_FRAMES)
            error = np.hypot(*(np.subtract(report.velocity, report.true_velocity)))
            row = [
                report.path_error,
                error,
                report.colour_share(colour),
                report.colour_share(colour, PATH_FRAMES, None),
            ]
            key = f"{kind}/{'conditioned' if conditioning else 'unconditioned'}"
            rows.setdefault(key, []).append(row)
            windows.setdefault(key, []).append(report.window_errors)
    names = ("path_error", "velocity_error", "colour_first_block", "colour_later")
    return {
        key: {name: round(float(v), 3) for name, v in zip(names, np.nanmean(values, axis=0), strict=True)}
        | {"path_error_per_window": [round(float(v), 2) for v in np.nanmean(windows[key], axis=0)]}
        for key, values in rows.items()
    }


def vae_round_trip(vae, videos: torch.Tensor, frames_per_block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Videos [B, 3, N, H, W] through a demo VAE as the pipeline streams them: encoded as a conditioning
    video is (`StreamingVAE.encode`: the first frame alone, then whole latent frames), decoded
    `frames_per_block` latent frames a call as a rollout is. Returns (latents [B, F, C, h, w], decoded
    frames [B, 3, N, H, W]): what the VAE alone does to what the pipeline shows
    (scripts/experiments/vae_long_roundtrip.py, first_frame_colour.py)."""
    stream = StreamingVAE(vae)
    latents = stream.encode(videos)
    decoded = torch.cat([stream.decode(block) for block in latents.split(frames_per_block, dim=1)], dim=2)
    return latents, decoded


# The long cases (issue 19, `test_demo_long_rollout`, `scripts/eval_demo.py --long`): rollouts of LONG_FRAMES
# latent frames (397 video frames) conditioned on clips no training stage reads, with a prompt switch late
# in the video.
LONG_FRAMES = 100  # latent frames per rollout, conditioning included
LONG_SWITCH = 81  # latent frame of the late switch (a block boundary): video frame 4 * 81 - 3 = 321
LONG_WORLD_SEED = 0  # train_demo's seed 0 reads streams 1, 2, 3, ... and 1000 (seed 1's stream 0), never 0
LONG_EDGE = 3  # windows (of PATH_FRAMES) at each end whose mean error `long_measures` reports
LONG_AREA = (0.6, 1.6)  # one blob: its area within this ratio of the reference's foreground
LONG_GRACE = 12  # frames after the switch not counted in the colour share (the change takes a block)
LONG_TURN_FRAMES = ROOM_FRAMES  # frames after the switch over which the turn is measured: the world's room for it
# What a long video must hold (test_demo_long_rollout, `long_failures`). Distances in px; the shapes are 16 px
# wide (two latent cells) and move 2 px a frame, bouncing off the walls many times over the 397 frames.
LONG_WINDOW_PX = 5.0  # most mean path error of any 12 generated frames: under half the smallest shape
LONG_GROWTH = 2.0  # the last LONG_EDGE windows' mean error at most this x the first LONG_EDGE windows'...
LONG_FLOOR_PX = 1.5  # ... taken as at least this (a near-perfect start must not make the bound unfair)
LONG_BLOB_SHARE = 0.95  # share of generated frames showing exactly one blob of LONG_AREA times the reference's
LONG_COLOUR_SHARE = 0.9  # share of generated frames in the rendered colour, before and after the switch
LONG_TURN = 0.5  # over the LONG_TURN_FRAMES after the switch, generated displacement along the true one (a share)
LONG_BOUNCES = 2  # the true path turns at walls at least this often before the switch: the bounds cover bounces


def long_clips(height: int = 64, width: int = 64, seed: int | None = None) -> list[Clip]:
    """The first colour-change and the first direction-change clip of a world stream no training reads
    (`seed`, default LONG_WORLD_SEED: the test's), each changing at LONG_SWITCH, LONG_FRAMES latent frames long."""
    seed = LONG_WORLD_SEED if seed is None else seed
    world = DemoWorld(seed, 4 * LONG_FRAMES - 3, height, width, 1.0, change_frames=(4 * LONG_SWITCH - 3,))
    clips = (world.clip(i) for i in range(100))
    colour = next(c for c in clips if c.change.colour is not None)
    direction = next(c for c in clips if c.change.direction is not None)
    return [colour, direction]


def long_rollout(pipe: VideoConditionalPipeline, clip: Clip, noise_seed: int = 0) -> torch.Tensor:
    """Generated video frames [3, N, H, W] on the CPU: the clip's first `num_conditioning_frames` under
    prompt1, prompt2 from latent frame LONG_SWITCH on (recached as `recache_on_switch` says, as a live
    session would), for the pipeline's `num_output_frames`, from the initial noise of `noise_seed` (drawn on
    the pipeline's device: the same seed on a GPU is another draw than on the CPU)."""
    first = pipe.cfg.num_conditioning_frames
    schedule = PromptSchedule((clip.prompt1, clip.prompt2), (LONG_SWITCH,))
    blocks = pipe.stream_prompts(schedule, clip.video[None, :, :first], seed=noise_seed)
    return torch.cat([block.frames[0].float().cpu() for block in blocks], dim=1)[:, first:]


def long_reference(pipe: VideoConditionalPipeline, clip: Clip) -> torch.Tensor:
    """The VAE round trip of `clip`'s generated span [3, N, H, W] (encoded, then decoded block by block as the
    pipeline decodes): what generated latents equal to the encoder's would show, the reference for size
    and colour. The decoder widens a shape's foreground and loses some red; a generator cannot undo that."""
    video = clip.video[None].to(pipe.vae.device)
    with torch.no_grad():
        _, decoded = vae_round_trip(pipe.vae.vae, video, frames_per_block=pipe.cfg.num_frame_per_block)
    return decoded[0, :, pipe.cfg.num_conditioning_frames :].float().cpu()


def turns(positions: np.ndarray) -> list[int]:
    """Frames where a position along one axis reverses (a bounce, or a switch's turn): the extremes of its
    3-frame moving average, frames without a shape (NaN) filled in from their neighbours, a flat stretch
    between two moves not a turn."""
    frames = np.arange(len(positions))
    known = ~np.isnan(positions)
    filled = np.interp(frames, frames[known], positions[known])
    smooth = np.convolve(filled, np.ones(3) / 3, "valid")  # smooth[j]: the mean of frames j .. j + 2
    found, last = [], 0.0
    for i, step in enumerate(np.sign(np.diff(smooth))):  # step i: smooth[i] -> smooth[i + 1]
        if step and last and step != last:
            found.append(i + 1)  # smooth[i] was the extreme: frame i + 1 its middle
        last = step or last
    return found


LEG_MARGIN = 3  # frames left out at each end of a leg: the turn's own frames, smoothed over by `turns`


def leg_speeds(positions: np.ndarray, turning: list[int]) -> list[float]:
    """The speed (px/frame) of each leg between consecutive `turning` frames (`turns`) of `positions` along one
    axis: the slope of a straight line fitted to the leg's middle (LEG_MARGIN frames off each end, frames
    without a shape skipped). A speed off the world's in the middle of the legs is a drift in open space; a
    right speed with legs of the wrong length is a turn early or late at the walls."""
    legs = (
        slope(torch.from_numpy(positions[start + LEG_MARGIN : end - LEG_MARGIN + 1]))
        for start, end in pairwise(turning)
    )
    return [abs(speed) for speed in legs if not math.isnan(speed)]


def motion_axis(centroids: np.ndarray) -> int:
    """The axis (0: y, 1: x) a shape's centroids [N, 2] move along: the one that varies most."""
    return int(np.argmax(np.nanstd(centroids, axis=0)))


def long_measures(clip: Clip, frames: torch.Tensor, reference: torch.Tensor, first: int) -> dict:
    """Per-window path error, blob and colour shares of generated `frames` (the clip's video frames from
    `first` on) against the rendered clip, size and colour judged against `reference` (`long_reference`):
    one blob of LONG_AREA times the reference's foreground; the rendered colour, counted over the frames
    whose reference shows it."""
    truth = clip.video[:, first:]
    generated, expected = foreground_centroid(frames), foreground_centroid(truth)
    distance = (generated - expected).norm(dim=1)  # [N]: NaN where no shape was found
    windows = [float(w.nanmean()) if not w.isnan().all() else math.inf for w in distance.split(PATH_FRAMES)]
    windows = windows[: len(distance) // PATH_FRAMES]  # whole windows only
    blobs = [blob_sizes(m) for m in foreground_mask(frames)]
    one_blob = [
        len(b) == 1 and LONG_AREA[0] <= b[0] / float(r.sum()) <= LONG_AREA[1]
        for b, r in zip(blobs, foreground_mask(reference), strict=True)
    ]
    states = clip.trajectory()[first:]
    shown = [c == s.colour for c, s in zip(dominant_colours(reference), states, strict=True)]
    right = [c == s.colour for c, s in zip(dominant_colours(frames), states, strict=True)]
    switch = clip.change.frame - first  # generated-frame index of the change
    after = slice(switch, switch + LONG_TURN_FRAMES)
    moved, true_moved = generated[after][-1] - generated[after][0], expected[after][-1] - expected[after][0]
    turn = float(moved @ true_moved / (true_moved @ true_moved)) if clip.change.direction is not None else None

    def colour_share(span: slice) -> float:
        return float(np.mean([r for r, ok in zip(right[span], shown[span], strict=True) if ok]))

    return {
        "windows": [round(w, 2) for w in windows],
        "first": float(np.mean(windows[:LONG_EDGE])),
        "last": float(np.mean(windows[-LONG_EDGE:])),
        "one_blob": float(np.mean(one_blob)),
        "colour_before": colour_share(slice(0, switch)),
        "colour_after": colour_share(slice(switch + LONG_GRACE, None)),
        "colour_shown": float(np.mean(shown)),  # the reference's own share: what the decoder can show
        # The share of the true displacement after a change of direction, which the world gives room to move
        # on (demo_world.sample_change). None after a change of colour: its frames may straddle a bounce,
        # where the true displacement is a frame's step and a pixel of centroid noise halves the share; its
        # path after the switch is judged by the windows.
        "turn": turn,
        "bounces": len(turns(expected[:switch, motion_axis(expected[:switch].numpy())].numpy())),  # true path
    }


def long_failures(m: dict) -> list[str]:
    """The bounds of test_demo_long_rollout that `long_measures`' `m` misses, each as 'what: value vs bound'
    (empty: the long video holds)."""
    growth_bound = LONG_GROWTH * max(m["first"], LONG_FLOOR_PX)
    checks = [
        ("bounces", m["bounces"], m["bounces"] >= LONG_BOUNCES, f">= {LONG_BOUNCES}"),
        ("worst window px", max(m["windows"]), max(m["windows"]) <= LONG_WINDOW_PX, f"<= {LONG_WINDOW_PX}"),
        ("last windows px", m["last"], m["last"] <= growth_bound, f"<= {growth_bound:.2f}"),
        ("one blob", m["one_blob"], m["one_blob"] >= LONG_BLOB_SHARE, f">= {LONG_BLOB_SHARE}"),
        ("colour before", m["colour_before"], m["colour_before"] >= LONG_COLOUR_SHARE, f">= {LONG_COLOUR_SHARE}"),
        ("colour after", m["colour_after"], m["colour_after"] >= LONG_COLOUR_SHARE, f">= {LONG_COLOUR_SHARE}"),
    ]
    if m["turn"] is not None:  # a change of direction
        checks.append(("turn", m["turn"], m["turn"] >= LONG_TURN, f">= {LONG_TURN}"))
    return [f"{name}: {value:.3g} vs {bound}" for name, value, held, bound in checks if not held]


def long_references(pipe: VideoConditionalPipeline, seed: int | None = None) -> list[torch.Tensor]:
    """`long_reference` of each long case of world `seed` (default the test's), in `long_clips`' order: what
    every draw of the noise of those cases is judged against."""
    return [long_reference(pipe, clip) for clip in long_clips(pipe.cfg.height, pipe.cfg.width, seed)]


def long_case_measures(
    pipe: VideoConditionalPipeline, clip: Clip, reference: torch.Tensor | None = None, noise_seed: int = 0
) -> dict:
    """`long_measures` of `pipe`'s long rollout of `clip` (a `long_clips` case) from `noise_seed`'s noise, against
    `reference` (default: `long_reference`, computed here)."""
    if reference is None:
        reference = long_reference(pipe, clip)
    return long_measures(clip, long_rollout(pipe, clip, noise_seed), reference, pipe.cfg.num_conditioning_frames)


def evaluate_long(
    pipe: VideoConditionalPipeline,
    seed: int | None = None,
    noise_seed: int = 0,
    references: Sequence[torch.Tensor] | None = None,
) -> dict[str, dict]:
    """`long_case_measures` of both long cases ("colour", "direction") of world `seed` (default the test's)
    for `pipe`, whose `num_output_frames` should be LONG_FRAMES (the cases' clips are that long), from
    `noise_seed`'s noise (default the test's), each with the bounds it misses (`failures`). `references`, the
    cases' `long_references`, do not depend on the noise: pass them to judge several draws of a world without
    another VAE round trip each (computed here by default)."""
    clips = long_clips(pipe.cfg.height, pipe.cfg.width, seed)
    references = references or long_references(pipe, seed)
    report = {}
    for kind, clip, reference in zip(("colour", "direction"), clips, references, strict=True):
        m = long_case_measures(pipe, clip, reference, noise_seed)
        report[kind] = {**m, "failures": long_failures(m)}
    return report
