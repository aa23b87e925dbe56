"""The demo world: deterministic, and its videos show what its captions say."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from longlive.demo_world import (
    CELL_PX,
    COLOURS,
    DIRECTIONS,
    FRAMES_PER_LATENT,
    ROOM_FRAMES,
    SHAPES,
    Change,
    DemoWorld,
    Scene,
    blob_sizes,
    caption,
    centroid,
    change_caption,
    colour_mask,
    dominant_colours,
    foreground_centroid,
    foreground_mask,
    make_clip,
    on_lattice,
    parse_caption,
    render,
    sample_scene,
    trajectory,
)

# A rendered shape's centroid moves by its speed each frame; pixel sampling shifts it by under a
# pixel (0.75 px allows a triangle's sloped edges), so tracked steps match within this tolerance.
STEP_TOLERANCE = 0.75


def test_same_seed_same_clips_other_seed_other_clips():
    a, b, c = DemoWorld(seed=3, num_frames=9), DemoWorld(seed=3, num_frames=9), DemoWorld(seed=4, num_frames=9)
    for i in (0, 5):
        assert torch.equal(a[i][0], b[i][0]) and a[i][1] == b[i][1]
    assert not torch.equal(a[0][0], c[0][0])
    first = [text for _, (_, text) in zip(range(3), iter(a), strict=False)]
    assert first == [a[i][1] for i in range(3)]


def test_video_shape_range_and_background():
    video, _ = DemoWorld(seed=0, num_frames=5, height=64, width=48)[0]
    assert video.shape == (3, 5, 64, 48) and video.dtype == torch.float32
    assert video.min() >= -1 and video.max() <= 1
    corner_share = (video[:, 0] == video[:, 0, :1, :1]).all(0).float().mean()
    assert corner_share > 0.8  # mostly plain background


@pytest.mark.parametrize("colour", list(COLOURS))
@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_shape_has_its_colour_and_moves_its_direction(colour, direction):
    dy, dx = DIRECTIONS[direction]
    scene = Scene("square", colour, position=(32.0, 32.0), velocity=(1.5 * dy, 1.5 * dx), size=12.0)
    video = render(scene, num_frames=8)
    for other in COLOURS:
        pixels = colour_mask(video, other).sum((1, 2))
        # 12 px on a side, 12 or 13 pixel centres per side depending on the sub-pixel position
        assert ((pixels >= 144) & (pixels <= 169)).all() if other == colour else (pixels == 0).all(), other
    steps = centroid(video, colour).diff(dim=0)  # [N-1, 2] (dy, dx) per frame
    expected = torch.tensor([1.5 * dy, 1.5 * dx]).expand_as(steps)
    assert (steps - expected).abs().max() <= STEP_TOLERANCE


@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_moves_right(shape):
    scene = Scene(shape, "green", position=(32.0, 16.0), velocity=(0.0, 2.0), size=16.0)
    steps = centroid(render(scene, num_frames=10), "green").diff(dim=0)
    assert (steps[:, 1] - 2.0).abs().max() <= STEP_TOLERANCE and steps[:, 0].abs().max() <= STEP_TOLERANCE


def test_bouncing_keeps_the_shape_inside_and_reverses_it():
    scene = Scene("circle", "blue", position=(32.0, 50.0), velocity=(0.0, 2.0), size=16.0)
    video = render(scene, num_frames=40)
    pixels = colour_mask(video, "blue").sum((1, 2))
    assert (pixels == pixels[0]).all()  # never clipped by a wall
    x = centroid(video, "blue")[:, 1]
    assert x.max() <= 64 - 8 + STEP_TOLERANCE and x.min() >= 8 - STEP_TOLERANCE
    assert x[10] < x[5]  # hit the right wall near frame 3, now moving left


def test_random_scenes_stay_inside_over_long_clips():
    rng = np.random.default_rng(0)
    for _ in range(10):
        scene = sample_scene(rng)
        video = render(scene, num_frames=60)
        pixels = colour_mask(video, scene.colour).sum((1, 2)).float()
        assert (pixels - pixels[0]).abs().max() <= 0.1 * pixels[0] + 4, scene


def test_captions_parse_back_to_the_scene():
    rng = np.random.default_rng(1)
    for _ in range(20):
        scene = sample_scene(rng)
        parsed = parse_caption(caption(scene))
        assert parsed == {"colour": scene.colour, "shape": scene.shape, "direction": scene.direction}
    assert caption(Scene("square", "red", (32, 32), (0, 1), 12)) == "a red square moves to the right"
    with pytest.raises(ValueError, match="demo grammar"):
        parse_caption("a purple hexagon dances")


def test_change_captions_parse():
    scene = Scene("square", "red", (32, 32), (0, 1), 12)
    assert change_caption(scene, Change(4, colour="blue")) == "the red square turns blue"
    assert change_caption(scene, Change(4, direction="left")) == "the red square moves to the left"
    assert parse_caption("the red square turns blue") == {"colour": "red", "shape": "square", "new_colour": "blue"}
    assert parse_caption("the red square moves to the left")["new_direction"] == "left"


def test_change_scenario_changes_exactly_what_prompt2_says():
    rng = np.random.default_rng(2)
    seen = set()
    for _ in range(12):
        clip = make_clip(rng, num_frames=17, change_frame=9)
        said = parse_caption(clip.prompt2)
        scene = clip.scene
        plain = {"colour": scene.colour, "shape": scene.shape, "direction": scene.direction}
        assert parse_caption(clip.prompt1) == plain
        assert (said["colour"], said["shape"]) == (scene.colour, scene.shape)
        assert torch.equal(clip.video[:, :9], render(scene, 9))  # the first part is the plain scene
        # The second part is the scene at frame 8 with only what prompt2 names changed, moving on.
        state = trajectory(scene, 9, 64, 64)[-1]
        if "new_colour" in said:
            seen.add("colour")
            after = replace(state, colour=said["new_colour"])
        else:
            seen.add("direction")
            dy, dx = DIRECTIONS[said["new_direction"]]
            after = replace(state, velocity=(dy * scene.speed, dx * scene.speed))
            assert after.direction == said["new_direction"]
        assert torch.equal(clip.video[:, 9:], render(after, 9)[:, 1:])
        shown = said.get("new_colour", scene.colour)
        assert (colour_mask(clip.video[:, 9:], shown).sum((1, 2)) > 0).all()
        if shown != scene.colour:
            assert colour_mask(clip.video[:, 9:], scene.colour).sum() == 0
    assert seen == {"colour", "direction"}


def test_foreground_tracking_finds_the_shape_and_its_colour():
    """The tracking the demo model's tests rely on: the foreground centroid is the shape's centroid, the
    dominant colour its colour (also when the colour is off by a blur's worth), and empty frames give NaN / None."""
    for colour in COLOURS:
        scene = Scene("circle", colour, (20.0, 30.0), (0.0, 1.5), 14.0)
        video = render(scene, 6)
        assert torch.allclose(foreground_centroid(video), centroid(video, colour), atol=1e-4)
        assert dominant_colours(video) == [colour] * 6
        faded = video * 0.8 + 0.1  # towards the background, as a blurry generation paints it
        assert dominant_colours(faded) == [colour] * 6
    empty = torch.full((3, 2, 16, 16), 235 / 127.5 - 1)
    assert foreground_centroid(empty).isnan().all() and dominant_colours(empty) == [None, None]


def test_blob_sizes_count_each_connected_shape():
    frames = render(Scene("square", "red", (20.0, 20.0), (0.0, 1.0), 10.0), 1, 64, 64)  # [3, 1, H, W]
    mask = foreground_mask(frames)[0]
    assert blob_sizes(mask) == [int(mask.sum())] and 80 <= mask.sum() <= 120
    split = mask.clone()
    split[:, 20] = False  # a column through the square cuts it in two
    second = mask.clone()
    second[50:53, 50:53] = True  # a second 9-pixel blob; one of 2 pixels is noise below min_pixels
    second[0, 0:2] = True
    assert len(blob_sizes(split)) == 2 and sum(blob_sizes(split)) == int(split.sum())
    assert blob_sizes(second) == [int(mask.sum()), 9]
    assert blob_sizes(torch.zeros(8, 8, dtype=torch.bool)) == []


def test_change_frames_draw_each_clips_change_frame():
    world = DemoWorld(seed=3, num_frames=30, change_prob=1.0, change_frames=(9, 21))
    frames = {world.clip(i).change.frame for i in range(40)}
    assert frames == {9, 21}
    clip = world.clip(0)
    assert torch.equal(clip.video, render(clip.scene, 30, 64, 64, clip.change))
    assert DemoWorld(seed=3, num_frames=30, change_prob=1.0).clip(0).change.frame == 9  # the fixed frame


def test_a_change_of_direction_goes_where_the_shape_has_room():
    """The world's direction changes are visible: for ROOM_FRAMES frames after the change the shape moves the
    way prompt2 says (never the way it already moved there, never into a wall it would meet at once), where
    before some changes pointed at a wall a few px away and the shape came back the other way at once."""
    world = DemoWorld(seed=11, num_frames=161, change_prob=1.0, change_frames=tuple(range(9, 150, 12)))
    checked = 0
    for index in range(400):
        scene, change = world.story(index)
        if change.direction is None:
            continue
        states = trajectory(scene, change.frame + ROOM_FRAMES + 1, 64, 64, change)
        before = trajectory(scene, change.frame + 1, 64, 64)[change.frame]
        assert change.direction != before.direction, (scene, change)
        along = [states[i].direction for i in range(change.frame, change.frame + ROOM_FRAMES)]
        assert set(along) == {change.direction}, (scene, change, along)
        checked += 1
    assert checked > 150


def test_late_changes_of_direction_turn_at_right_angles():
    """After `reverse_until` (the video-conditional switch by default) a change of direction is a right-angle
    turn, never a reversal, which would look like a bounce's aftermath; at the switch itself both happen."""
    world = DemoWorld(seed=11, num_frames=161, change_prob=1.0, change_frames=tuple(range(9, 150, 12)))
    kinds: dict[bool, set[str]] = {True: set(), False: set()}
    for index in range(400):
        scene, change = world.story(index)
        if change.direction is None:
            continue
        before = trajectory(scene, change.frame, 64, 64)[change.frame - 1]
        reversed_ = np.dot(DIRECTIONS[change.direction], DIRECTIONS[before.direction]) != 0
        kinds[change.frame <= world.reverse_until].add("reversal" if reversed_ else "turn")
    assert kinds == {True: {"reversal", "turn"}, False: {"turn"}}
    anywhere = DemoWorld(seed=11, num_frames=161, change_prob=1.0, change_frames=(105,), reverse_until=161)
    changes = [anywhere.story(i)[1] for i in range(60)]
    before = [trajectory(anywhere.story(i)[0], 105, 64, 64)[104] for i in range(60)]
    assert any(
        c.direction and np.dot(DIRECTIONS[c.direction], DIRECTIONS[b.direction]) != 0
        for c, b in zip(changes, before, strict=True)
    )


def test_shapes_keep_to_the_lattice_and_turn_touching_the_wall():
    """The world's shapes keep to the lattice of its speed (`lattice_gaps`): every frame's gaps to the walls are
    whole steps, direction changes included, and each bounce turns the shape the frame after its edge meets the
    wall, never a pixel short of it: the drift a generator could make unseen in a continuous world."""
    world = DemoWorld(seed=5, num_frames=161, change_prob=0.5, change_frames=(9, 57, 105))
    bounces = 0
    for index in range(120):
        scene, change = world.story(index)
        states = trajectory(scene, 161, 64, 64, change)
        for before, state in zip(states, states[1:], strict=False):
            gaps = np.array(state.position) - state.size / 2
            assert np.allclose(gaps / state.speed, np.round(gaps / state.speed)), (scene, change, state)
            for axis in range(2):
                if before.velocity[axis] * state.velocity[axis] < 0 and (change is None or change.direction is None):
                    edge = before.position[axis] - before.size / 2
                    assert min(edge, 64 - before.size - edge) == 0, (scene, change, before)
                    bounces += 1
    assert bounces > 200
    placed = on_lattice(replace(scene, position=(31.3, 20.9)))  # a hand-placed scene, as the tests place theirs
    cells = (np.array(placed.position) - placed.size / 2) / CELL_PX
    assert np.allclose(cells, np.round(cells)), placed
    assert np.abs(np.array(placed.position) - (31.3, 20.9)).max() <= CELL_PX / 2


def test_latent_frames_end_on_whole_cells_and_bounces_fall_between_them():
    """On the cell lattice every latent frame's last video frame (0, 4, 8, ...) has the shape on whole latent
    cells, direction changes at block starts included, so each latent frame is one pattern moved by whole cells;
    and every bounce falls between two latent frames (the shape touches the wall at a frame 4k): the world's
    latent frames never show a shape a fraction of a cell off, which a generator's drift would."""
    world = DemoWorld(seed=7, num_frames=161, change_prob=0.5, change_frames=(9, 57, 105))
    bounces = 0
    for index in range(120):
        scene, change = world.story(index)
        states = trajectory(scene, 161, 64, 64, change)
        for frame in range(0, 161, FRAMES_PER_LATENT):
            cells = (np.array(states[frame].position) - states[frame].size / 2) / CELL_PX
            assert np.allclose(cells, np.round(cells)), (scene, change, frame)
        for frame, (before, state) in enumerate(zip(states, states[1:], strict=False)):
            if any(b * a < 0 for b, a in zip(before.velocity, state.velocity, strict=True)):
                if change is None or frame + 1 != change.frame:
                    assert frame % FRAMES_PER_LATENT == 0, (scene, change, frame)
                    bounces += 1
    assert bounces > 100
