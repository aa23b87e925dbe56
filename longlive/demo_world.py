"""The demo model's synthetic world: one coloured shape moving on a plain light background.

A `Scene` is a shape (square, circle, triangle) of a colour (red, green, blue, yellow) with a
position, a velocity along one axis and a size; it moves at constant speed and bounces off the walls.
`render` draws it as a video [3, N, H, W] in [-1, 1]; `caption` describes it in a small grammar
("a red square moves to the right"); a `Change` makes the second part of a clip differ in colour or
direction, described by the change caption that serves as prompt2 ("the red square turns blue").
`DemoWorld(seed)` yields (video, caption) pairs generated on the fly, the same for the same seed.
`centroid` tracks a colour's centroid per frame, for tests of what a model generated.

Positions and velocities are (y, x) in pixels and pixels per frame; y grows downwards.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

SHAPES = ("square", "circle", "triangle")
# RGB in [0, 255]: saturated and far apart, so a colour stays recognisable in a blurry generation.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 230),
    "yellow": (235, 200, 30),
}
BACKGROUND = (235, 235, 235)
DIRECTIONS: dict[str, tuple[int, int]] = {"right": (0, 1), "left": (0, -1), "up": (-1, 0), "down": (1, 0)}
CELL_PX = 8.0  # a latent cell of the demo VAE (8x spatially) at 64x64, scaled with the frame size
FRAMES_PER_LATENT = 4  # the causal VAE's stride in time: latent frame k >= 1 holds video frames 4k-3 .. 4k
SPEEDS = (CELL_PX / FRAMES_PER_LATENT,)  # 2 px/frame at 64x64: one speed, a latent cell per latent frame, so a
# shape on the cell lattice is on it again at the last frame of every latent frame (README, "The demo model")
SIZE_CELLS = (2,)  # shape sizes in cells (16 px): sizes and gaps of whole cells keep both walls on the lattice
PHRASES = {"right": "to the right", "left": "to the left", "up": "up", "down": "down"}


@dataclass(frozen=True)
class Scene:
    """One shape's state at frame 0; `velocity` lies along one axis."""

    shape: str
    colour: str
    position: tuple[float, float]  # centre (y, x) in pixels
    velocity: tuple[float, float]  # (vy, vx) in pixels per frame
    size: float  # side, diameter or triangle height, in pixels

    @property
    def direction(self) -> str:
        vy, vx = self.velocity
        if abs(vx) >= abs(vy):
            return "right" if vx > 0 else "left"
        return "down" if vy > 0 else "up"

    @property
    def speed(self) -> float:
        return float(max(abs(self.velocity[0]), abs(self.velocity[1])))


@dataclass(frozen=True)
class Change:
    """From frame `frame` on, the shape takes colour `colour` or moves in direction `direction`."""

    frame: int
    colour: str | None = None
    direction: str | None = None

    def __post_init__(self) -> None:
        if (self.colour is None) == (self.direction is None):
            raise ValueError(f"a Change sets exactly one of colour and direction, got {self}")


# ----------------------------------------------------------------------------------------------
# Motion and rendering.
# ----------------------------------------------------------------------------------------------


def trajectory(scene: Scene, num_frames: int, height: int, width: int, change: Change | None = None) -> list[Scene]:
    """The scene at each frame: constant velocity, reflected at the walls, `change` applied at its frame."""
    half = scene.size / 2
    low, high = np.array([half, half]), np.array([height - half, width - half])
    pos, vel = np.array(scene.position, dtype=float), np.array(scene.velocity, dtype=float)
    colour = scene.colour
    states = []
    for i in range(num_frames):
        if change is not None and i == change.frame:
            colour = change.colour or colour
            if change.direction is not None:
                vel = np.array(DIRECTIONS[change.direction], dtype=float) * scene.speed
        if i > 0:
            pos = pos + vel
            for axis in range(2):  # reflect off a wall (a step never crosses the whole frame)
                if pos[axis] < low[axis]:
                    pos[axis], vel[axis] = 2 * low[axis] - pos[axis], -vel[axis]
                elif pos[axis] > high[axis]:
                    pos[axis], vel[axis] = 2 * high[axis] - pos[axis], -vel[axis]
        states.append(replace(scene, colour=colour, position=tuple(pos), velocity=tuple(vel)))
    return states


def shape_mask(scene: Scene, height: int, width: int) -> np.ndarray:
    """Boolean [H, W]: the pixels (sampled at their centres) the shape covers."""
    return shape_masks(scene.shape, scene.size, np.array([scene.position]), height, width)[0]


def shape_masks(shape: str, size: float, positions: np.ndarray, height: int, width: int) -> np.ndarray:
    """Boolean [N, H, W]: the pixels a shape centred at each of `positions` [N, 2] covers."""
    ys = np.arange(height)[None, :, None] + 0.5
    xs = np.arange(width)[None, None, :] + 0.5
    dy, dx = ys - positions[:, 0, None, None], xs - positions[:, 1, None, None]  # [N, H, 1], [N, 1, W]
    half = size / 2
    if shape == "square":
        return (np.abs(dy) <= half) & (np.abs(dx) <= half)
    if shape == "circle":
        return dy**2 + dx**2 <= half**2
    if shape == "triangle":  # apex up; half-width grows from 0 at the top to `half` at the base
        return (np.abs(dy) <= half) & (np.abs(dx) <= (dy + half) / 2)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def render(
    scene: Scene, num_frames: int, height: int = 64, width: int = 64, change: Change | None = None
) -> torch.Tensor:
    """The scene as a video [3, N, H, W] float32 in [-1, 1]."""
    return paint(*rasterize(trajectory(scene, num_frames, height, width, change), height, width))


def rasterize(states: Sequence[Scene], height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A trajectory's frames (one shape and size) as the shape's pixels [N, H, W] bool and its colour per
    frame [N, 3] (RGB, 0-255): `paint` makes them a video where it is needed (on a GPU: a twelfth of the
    bytes a float video takes to get there)."""
    positions = np.array([s.position for s in states])
    masks = shape_masks(states[0].shape, states[0].size, positions, height, width)
    colours = torch.tensor([COLOURS[s.colour] for s in states], dtype=torch.float32)
    return torch.from_numpy(masks), colours


def paint(masks: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """Shape pixels [..., N, H, W] bool and colours [..., N, 3] (RGB, 0-255) -> videos [..., 3, N, H, W]
    float32 in [-1, 1] on the background, on the masks' device."""
    background = torch.tensor(BACKGROUND, dtype=torch.float32, device=masks.device).view(3, 1, 1, 1)
    shape = colours.to(masks.device).transpose(-1, -2)[..., None, None]  # [..., 3, N, 1, 1]
    return torch.where(masks.unsqueeze(-4), shape, background) / 127.5 - 1


# ----------------------------------------------------------------------------------------------
# Captions: "a red square moves to the right"; changes: "the red square turns blue",
# "the red square moves to the left".
# ----------------------------------------------------------------------------------------------


def caption(scene: Scene) -> str:
    return f"a {scene.colour} {scene.shape} moves {PHRASES[scene.direction]}"


def change_caption(scene: Scene, change: Change) -> str:
    subject = f"the {scene.colour} {scene.shape}"
    if change.colour is not None:
        return f"{subject} turns {change.colour}"
    return f"{subject} moves {PHRASES[change.direction]}"


_WORD = {
    "colour": "|".join(COLOURS),
    "shape": "|".join(SHAPES),
    "direction": "|".join(re.escape(p) for p in PHRASES.values()),
}
_CAPTION = re.compile(rf"a ({_WORD['colour']}) ({_WORD['shape']}) moves ({_WORD['direction']})")
_CHANGE = re.compile(
    rf"the ({_WORD['colour']}) ({_WORD['shape']}) (?:turns ({_WORD['colour']})|moves ({_WORD['direction']}))"
)
_DIRECTION_OF = {phrase: name for name, phrase in PHRASES.items()}


def parse_caption(text: str) -> dict[str, str]:
    """The attributes a caption names: colour, shape, and direction or new_colour / new_direction."""
    if match := _CAPTION.fullmatch(text):
        colour, shape, phrase = match.groups()
        return {"colour": colour, "shape": shape, "direction": _DIRECTION_OF[phrase]}
    if match := _CHANGE.fullmatch(text):
        colour, shape, new_colour, phrase = match.groups()
        parsed = {"colour": colour, "shape": shape}
        if new_colour is not None:
            parsed["new_colour"] = new_colour
        else:
            parsed["new_direction"] = _DIRECTION_OF[phrase]
        return parsed
    raise ValueError(f"caption {text!r} is not in the demo grammar (e.g. 'a red square moves to the right')")


# ----------------------------------------------------------------------------------------------
# Sampling scenes and clips.
# ----------------------------------------------------------------------------------------------


def world_scale(height: int, width: int) -> float:
    """How the world's lengths (CELL_PX, SPEEDS, sizes: all in px at 64x64) scale to a frame of this size."""
    return min(height, width) / 64


def sample_scene(rng: np.random.Generator, height: int = 64, width: int = 64) -> Scene:
    """A random shape, colour and direction at the world's speed, placed fully inside the frame on the world's
    lattice of latent cells (`lattice_gaps`)."""
    scale = world_scale(height, width)
    speed, cell = float(rng.choice(SPEEDS)) * scale, CELL_PX * scale
    size = cell * int(rng.choice(SIZE_CELLS))
    position = tuple(lattice_gaps(rng, extent, size, cell) + size / 2 for extent in (height, width))
    direction = DIRECTIONS[str(rng.choice(list(DIRECTIONS)))]
    return Scene(
        shape=str(rng.choice(SHAPES)),
        colour=str(rng.choice(list(COLOURS))),
        position=position,
        velocity=(direction[0] * speed, direction[1] * speed),
        size=size,
    )


def lattice_gaps(rng: np.random.Generator, extent: int, size: float, step: float) -> float:
    """A random gap between the shape's top (or left) edge and the wall, a whole number of lattice steps.

    The step is a latent cell, the distance the shape moves in a latent frame's 4 video frames. A shape whose
    size and gaps are whole cells is on whole cells again at the last frame of every latent frame, and a wall
    reflects it there: every bounce falls between two latent frames, never inside one. So every latent frame
    is one of a few patterns (a shape moving one way, its phases within the cell always the same) moved by
    whole cells, and a drift by a fraction of a pixel is a state no clip shows. On the eighth session's
    lattice of 2 px, a quarter cell, a latent frame had four phases and a bounce four shapes, and the
    generators drifted by a few percent (BENCHMARKS.md, ninth session)."""
    return step * int(rng.integers(0, int((extent - size) // step) + 1))


def on_lattice(scene: Scene, height: int = 64, width: int = 64) -> Scene:
    """The scene moved by at most half a cell onto the world's lattice (`lattice_gaps`): a hand-placed scene
    that moves as the world's own do (its size should be whole cells, as the world's are)."""
    cell = CELL_PX * world_scale(height, width)
    gaps = np.array(scene.position) - scene.size / 2
    position = np.round(gaps / cell) * cell + scene.size / 2
    return replace(scene, position=(float(position[0]), float(position[1])))


ROOM_FRAMES = 8  # a change of direction goes where the shape can move this many frames before it meets a wall


def sample_change(
    rng: np.random.Generator, scene: Scene, frame: int, height: int = 64, width: int = 64, reverse: bool = True
) -> Change:
    """A change of colour (never to the current one) or of direction at `frame`: never a way the shape moves
    there without it (after its bounces, and a bounce at `frame` itself), nor towards a wall it would meet within
    ROOM_FRAMES (the world would turn it back at once, against its caption; where no way has that room, the
    roomiest one). Without `reverse`, only a turn at right angles: see `DemoWorld`'s `reverse_until`."""
    if rng.random() < 0.5:
        return Change(frame, colour=str(rng.choice([c for c in COLOURS if c != scene.colour])))
    states = trajectory(scene, frame + 1, height, width)
    there = states[frame - 1]  # the new velocity moves the shape on from here: the room is counted from it
    unchanged = {there.direction, states[frame].direction}  # the way it moves, before and after a bounce there
    if not reverse:  # nor back along the axis it moves on
        axis = 0 if there.velocity[0] else 1
        unchanged |= {d for d, step in DIRECTIONS.items() if step[axis]}
    room = {d: room_towards(there, d, height, width) for d in DIRECTIONS if d not in unchanged}
    roomy = [d for d, px in room.items() if px >= ROOM_FRAMES * scene.speed] or [max(room, key=room.get)]
    return Change(frame, direction=str(rng.choice(roomy)))


def room_towards(scene: Scene, direction: str, height: int, width: int) -> float:
    """Pixels between the shape's edge and the wall it faces going `direction`."""
    (y, x), half = scene.position, scene.size / 2
    return {"right": width - x - half, "left": x - half, "down": height - y - half, "up": y - half}[direction]


@dataclass(frozen=True)
class Clip:
    """A rendered clip, its scene, and the prompts: prompt2 is the change caption (or prompt1)."""

    video: torch.Tensor  # [3, N, H, W] in [-1, 1]
    scene: Scene
    change: Change | None
    prompt1: str
    prompt2: str

    def trajectory(self) -> list[Scene]:
        """The rendered shape's state at each of the clip's frames (its colour, position, direction)."""
        height, width = self.video.shape[2:]
        return trajectory(self.scene, self.video.shape[1], height, width, self.change)


def make_clip(
    rng: np.random.Generator,
    num_frames: int,
    height: int = 64,
    width: int = 64,
    change_frame: int | None = None,
) -> Clip:
    """A random clip; with `change_frame`, its frames from there on show a change named by prompt2."""
    scene, change = sample_story(rng, height, width, change_frame)
    return clip_of(scene, change, num_frames, height, width)


def sample_story(
    rng: np.random.Generator,
    height: int = 64,
    width: int = 64,
    change_frame: int | None = None,
    reverse: bool = True,
) -> tuple[Scene, Change | None]:
    """A random scene and, with `change_frame`, its change there: what `make_clip` renders."""
    scene = sample_scene(rng, height, width)
    return scene, None if change_frame is None else sample_change(rng, scene, change_frame, height, width, reverse)


def clip_of(scene: Scene, change: Change | None, num_frames: int, height: int = 64, width: int = 64) -> Clip:
    """The scene (and change) rendered as a `Clip` with its prompts."""
    video = render(scene, num_frames, height, width, change)
    prompt1 = caption(scene)
    return Clip(video, scene, change, prompt1, prompt1 if change is None else change_caption(scene, change))


def hurried_start(
    scene: Scene, change: Change | None, frames: int, factor: float, height: int, width: int
) -> Scene | None:
    """The scene of `hurried_context`'s first `frames` frames: the shape at frame `frames` of the story (scene,
    change), moving `factor` times as fast along its line and started where it arrives there; None where
    that run would cross a wall or the change comes first."""
    if change is not None and change.frame < frames:
        return None
    state = trajectory(scene, frames + 1, height, width, change)[frames]
    velocity = np.array(state.velocity) * factor
    start = np.array(state.position) - frames * velocity
    half = state.size / 2
    for end in (start, start + (frames - 1) * velocity):
        if not (half <= end[0] <= height - half and half <= end[1] <= width - half):
            return None
    return replace(state, colour=scene.colour, position=tuple(start), velocity=tuple(velocity))


def hurried_context(clip: Clip, frames: int, factor: float) -> torch.Tensor | None:
    """`clip`'s video with its first `frames` frames replaced by the same shape moving `factor` times as fast
    along the same line and arriving where the clip has it at frame `frames`, the rest the world's own; None
    where that run would cross a wall or the clip changes before `frames` (`hurried_start`). A context whose
    speed is off, and a continuation that does not follow it: what a generator sees of its own slightly
    wrong output."""
    height, width = clip.video.shape[2:]
    start = hurried_start(clip.scene, clip.change, frames, factor, height, width)
    if start is None:
        return None
    return torch.cat([render(start, frames, height, width), clip.video[:, frames:]], dim=1)


def shifted_context(
    clip: Clip, frames: int, offset: tuple[float, float], creep_from: int | None = None, jump: bool = False
) -> torch.Tensor:
    """`clip`'s video with its first `frames` frames showing the shape `offset` (y, x) px off where the world has
    it (bounces and changes as they are), the rest the world's own: a context a little off the lattice
    (`lattice_gaps`) and a continuation on it, what a generator sees of its own output drifting by less than
    a step, and learns to come back from.

    With `creep_from`, frames before it stay where the world has them and the offset grows linearly from there
    to the whole of it at frame `frames - 1`: a generator's own drift, which starts from true conditioning
    frames (its sinks) and creeps along an axis the world keeps still. The shapes are drawn with hard edges,
    so the creep shows in whole-pixel steps, and an offset under half a pixel on an axis not at all. With `jump`
    too, the frames from `creep_from` on are off by the whole offset at once: a turn made at the wrong place."""
    height, width = clip.video.shape[2:]
    if not 0 < frames <= clip.video.shape[1]:
        raise ValueError(f"shifted_context: {frames} context frames for a clip of {clip.video.shape[1]}")
    shares = np.ones(frames)
    if jump and creep_from is None:
        raise ValueError("shifted_context: a jump needs creep_from, the frame it comes at")
    if creep_from is not None:
        if not 0 <= creep_from < frames:
            raise ValueError(f"shifted_context: creep_from {creep_from} outside the context's {frames} frames")
        ramp = 1 if jump else frames - creep_from
        shares = np.clip((np.arange(frames) - creep_from + 1) / ramp, 0.0, 1.0)
    states = [
        replace(state, position=(state.position[0] + share * offset[0], state.position[1] + share * offset[1]))
        for state, share in zip(clip.trajectory()[:frames], shares, strict=True)
    ]
    return torch.cat([paint(*rasterize(states, height, width)), clip.video[:, frames:]], dim=1)


class DemoWorld:
    """Endless (video, caption) pairs, item i a pure function of (seed, i).

    With probability `change_prob` a clip changes at video frame `change_frame` and its caption is the
    change caption (what prompt2 says for the whole clip); otherwise it is the plain caption. With
    `change_frames`, each change clip draws its change frame from them instead (a prompt switch anywhere
    in the clip; `clip` gives both prompts and the frame), uniformly or with `change_weights`.

    A change of direction after `reverse_until` (default `change_frame`, the video-conditional switch) turns
    the shape at right angles, never back along its axis. Later in a video a reversal looks like what every
    bounce leaves behind: once the bounce has left a generator's window of past frames, a shape moving against
    its caption is both "just told to reverse" and "bounced a while ago", so a generator trained on both turns
    back in open space at random after a late switch. A right-angle turn is never what a bounce leaves.
    """

    def __init__(
        self,
        seed: int,
        num_frames: int = 45,
        height: int = 64,
        width: int = 64,
        change_prob: float = 0.0,
        change_frame: int = 9,
        change_frames: Sequence[int] | None = None,
        change_weights: Sequence[float] | None = None,
        reverse_until: int | None = None,
    ) -> None:
        self.seed, self.num_frames, self.height, self.width = seed, num_frames, height, width
        self.change_prob, self.change_frame = change_prob, change_frame
        self.reverse_until = change_frame if reverse_until is None else reverse_until
        self.change_frames = None if change_frames is None else tuple(change_frames)
        self.change_weights = None if change_weights is None else np.asarray(change_weights, dtype=float)
        if self.change_weights is not None and (
            self.change_frames is None
            or len(self.change_weights) != len(self.change_frames)
            or not np.isclose(self.change_weights.sum(), 1.0)
            or (self.change_weights < 0).any()
        ):
            raise ValueError(f"change_weights {change_weights}: one probability per change frame, summing to 1")

    def clip(self, index: int) -> Clip:
        return clip_of(*self.story(index), self.num_frames, self.height, self.width)

    def story(self, index: int) -> tuple[Scene, Change | None]:
        """Clip `index`'s scene and change, without rendering it."""
        rng = np.random.default_rng([self.seed, index])
        changes = rng.random() < self.change_prob
        frame = self.change_frame
        if changes and self.change_frames is not None:
            frame = int(rng.choice(self.change_frames, p=self.change_weights))
        return sample_story(rng, self.height, self.width, frame if changes else None, frame <= self.reverse_until)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        clip = self.clip(index)
        return clip.video, clip.prompt2

    def __iter__(self) -> Iterator[tuple[torch.Tensor, str]]:
        index = 0
        while True:
            yield self[index]
            index += 1

    def batch(self, start: int, size: int) -> tuple[torch.Tensor, list[str]]:
        """Items [start, start+size) stacked: videos [B, 3, N, H, W] and their captions."""
        videos, captions = zip(*(self[i] for i in range(start, start + size)), strict=True)
        return torch.stack(videos), list(captions)


# ----------------------------------------------------------------------------------------------
# Measuring videos (generated or rendered).
# ----------------------------------------------------------------------------------------------


def _rgb_distance(frames: torch.Tensor, rgb: tuple[int, int, int]) -> torch.Tensor:
    """RMS distance over RGB (in [-1, 1] units) of each pixel of `frames` [..., 3, N, H, W] from `rgb`."""
    target = torch.tensor(rgb, dtype=torch.float32, device=frames.device).view(3, 1, 1, 1) / 127.5 - 1
    return (frames.float() - target).pow(2).mean(-4).sqrt()  # [..., N, H, W]


def colour_mask(frames: torch.Tensor, colour: str, tolerance: float = 0.35) -> torch.Tensor:
    """Boolean [N, H, W]: pixels of `frames` [3, N, H, W] within `tolerance` (RMS over RGB, in [-1, 1]
    units) of the named colour."""
    return _rgb_distance(frames, COLOURS[colour]) < tolerance


def foreground_mask(frames: torch.Tensor, threshold: float = 0.25) -> torch.Tensor:
    """Boolean [..., N, H, W]: pixels of `frames` [..., 3, N, H, W] farther than `threshold` (RMS over RGB)
    from the plain background, whatever their colour: a generated shape is found even where its colour
    is off."""
    return _rgb_distance(frames, BACKGROUND) > threshold


def _mask_centroid(mask: torch.Tensor, min_pixels: int) -> torch.Tensor:
    """Per-frame centroid (y, x) in pixels [N, 2] of a boolean mask [N, H, W]; NaN where fewer than
    `min_pixels` are set (pixel i's centre is at i + 0.5, as in `render`)."""
    mask = mask.float()
    count = mask.sum((1, 2))  # [N]
    ys = torch.arange(mask.shape[1], dtype=torch.float32) + 0.5
    xs = torch.arange(mask.shape[2], dtype=torch.float32) + 0.5
    out = torch.stack([(mask.sum(2) * ys).sum(1), (mask.sum(1) * xs).sum(1)], dim=1) / count.clamp(min=1)[:, None]
    out[count < min_pixels] = float("nan")
    return out


def centroid(frames: torch.Tensor, colour: str, tolerance: float = 0.35, min_pixels: int = 4) -> torch.Tensor:
    """Per-frame centroid (y, x) [N, 2] of the pixels of `colour` in `frames` [3, N, H, W] (NaN: none)."""
    return _mask_centroid(colour_mask(frames, colour, tolerance), min_pixels)


def foreground_centroid(frames: torch.Tensor, threshold: float = 0.25, min_pixels: int = 4) -> torch.Tensor:
    """Per-frame centroid (y, x) [N, 2] of the foreground of `frames` [3, N, H, W] (NaN: none)."""
    return _mask_centroid(foreground_mask(frames, threshold), min_pixels)


def dominant_colours(frames: torch.Tensor, threshold: float = 0.25) -> list[str | None]:
    """Per frame, the palette colour nearest the mean of the foreground pixels (None where there are none)."""
    mask = foreground_mask(frames, threshold)  # [N, H, W]
    palette = torch.tensor(list(COLOURS.values()), dtype=torch.float32) / 127.5 - 1  # [K, 3]
    names = list(COLOURS)
    out: list[str | None] = []
    for i in range(frames.shape[1]):
        pixels = frames[:, i].float()[:, mask[i]]  # [3, P]
        if pixels.shape[1] == 0:
            out.append(None)
            continue
        out.append(names[int((palette - pixels.mean(1)).pow(2).sum(1).argmin())])
    return out


def blob_sizes(mask: torch.Tensor, min_pixels: int = 4) -> list[int]:
    """Pixel counts of the 4-connected blobs of a boolean mask [H, W] with at least `min_pixels` each,
    largest first: one entry where a frame shows one shape, more where it split or a second one appeared."""
    todo = {(int(y), int(x)) for y, x in mask.nonzero().tolist()}
    sizes = []
    while todo:
        stack, size = [todo.pop()], 0
        while stack:
            y, x = stack.pop()
            size += 1
            for neighbour in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if neighbour in todo:
                    todo.remove(neighbour)
                    stack.append(neighbour)
        if size >= min_pixels:
            sizes.append(size)
    return sorted(sizes, reverse=True)
