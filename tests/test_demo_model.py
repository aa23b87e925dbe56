"""The trained demo model (demo_model/, configs/demo_video_conditional.yaml) on CPU: conditioned on a video
of the demo world, it continues the shape's motion and follows a prompt2 that changes it; and these
checks pass only because the engine works: without the conditioning frames or without the KV cache's
past frames, the same checks fail.

What is measured (longlive.demo_eval): the centroid of the non-background pixels per frame (so a shape
is tracked even where its colour is off), its velocity by a least-squares line, and the palette colour
nearest the shape's mean colour. Frames are 64x64; shapes here are 14 px wide and move 1 px a frame.
"""

from __future__ import annotations

import json
import math
from itertools import pairwise

import numpy as np
import pytest
import torch
from conftest import REPO, script_module

from longlive import demo_eval
from longlive.config import load_config
from longlive.demo_eval import (
    LONG_FRAMES,
    LONG_WORLD_SEED,
    PATH_FRAMES,
    Report,
    evaluate,
    long_clips,
    long_measures,
    measure,
    vae_round_trip,
    velocity,
)
from longlive.demo_world import (
    CELL_PX,
    COLOURS,
    DIRECTIONS,
    SIZE_CELLS,
    SPEEDS,
    Change,
    Scene,
    foreground_centroid,
    trajectory,
)
from longlive.pipeline import Block, VideoConditionalPipeline

DEMO_CONFIG = REPO / "configs" / "demo_video_conditional.yaml"
CONDITIONING = 9  # video frames, the config's num_conditioning_frames (where the changes below start)
HEIGHT = WIDTH = 64  # the config's frame size

SPEED = min(SPEEDS)  # px/frame of the scenes below: the world's slowest (its only one, 2)
SIZE = CELL_PX * SIZE_CELLS[0]  # px: a size of the world's, whole cells (`demo_world.lattice_gaps`)

# Tolerances, in pixels and pixels per frame.
PATH_PX = 6.0  # mean distance of the generated centroid from the true one over the first 12 generated
# frames (demo_eval.PATH_FRAMES): under half the shape's width, so it overlaps where the true one is
# Generated frames the velocity is fitted over: as many as a straight path from the conditioning on crosses
# the frame without meeting a wall (15: 24 frames of 2 px across the 48 px a 16-px shape has).
MEASURED = int((min(HEIGHT, WIDTH) - SIZE) // SPEED) - CONDITIONING
MIN_SPEED = 0.3  # velocity along the expected direction over those frames
MAX_SIDEWAYS = 0.3  # |velocity| across it (a shape that keeps its old direction moves SPEED across)
COLOUR_SHARE = 0.75  # share of the first generated block's 12 frames whose shape has the expected colour
HOLD_SHARE = 0.9  # share of the generated frames after the first block (24 of them) that keep it
CONTROL_SHARE = 0.1  # most a control run (no colour asked) may show of another colour, over all its frames

# test_demo_long_rollout (issue 19): the long cases of demo_eval (LONG_FRAMES latent frames, 397 video frames,
# of the shipped config, conditioned on clips no training stage reads, a prompt switch late in the video),
# held to demo_eval's LONG_* bounds (`long_failures`). The shipped weights (J with the F1 decoder) keep every
# window of their 16 validation cases (world seeds 6007, 6010, 6018 and 6029 at noise seeds 0 and 1, which no
# test reads) within 1.73 px (H200, 2026-12-01).

pytestmark = pytest.mark.usefixtures("one_thread")

# One shape and colour per direction: every colour, shape and direction appears.
SCENES = {
    "right": Scene("square", "red", (32.0, 32.0), (0.0, SPEED), SIZE),
    "up": Scene("circle", "blue", (32.0, 32.0), (-SPEED, 0.0), SIZE),
    "left": Scene("triangle", "green", (32.0, 32.0), (0.0, -SPEED), SIZE),
    "down": Scene("square", "yellow", (32.0, 32.0), (SPEED, 0.0), SIZE),
}
# Green to red came late with the weights before these (5-7 frames, 7 of the first 12 where the test asks for
# 9) and with the two runs trained beside these; these weights pass it at noise seed 0 (not at seed 3: 8 of 12,
# CPU, 2026-12-01). Their run switched more change clips at the first generated block (--first_switch_share
# 0.35, README "How it was trained").
COLOUR_CASES = [(scene, colour) for scene in SCENES.values() for colour in COLOURS if colour != scene.colour]
DIRECTION_CASES = [(scene, d) for scene in SCENES.values() for d in DIRECTIONS if d != scene.direction]


def centred(scene: Scene, turn: str | None = None) -> Scene:
    """The scene placed so that its measured path (CONDITIONING frames its way, then MEASURED frames
    `turn`'s way) meets no wall."""
    return demo_eval.centred(scene, CONDITIONING, MEASURED, HEIGHT, WIDTH, turn)


def demo_pipeline(*overrides: str) -> VideoConditionalPipeline:
    cfg = load_config(DEMO_CONFIG, [f"wan_model_dir={REPO / 'demo_model'}", *overrides])
    assert cfg.num_conditioning_frames == CONDITIONING and (cfg.height, cfg.width) == (HEIGHT, WIDTH)
    return VideoConditionalPipeline.from_config(cfg, "cpu")


@pytest.fixture(scope="module")
def pipe() -> VideoConditionalPipeline:
    return demo_pipeline()


@pytest.fixture(scope="module")
def controls(pipe) -> dict[Scene, Report]:
    """Each scene continued under its own caption by `pipe`, generated once for the module's tests."""
    return {}


def generate(pipe: VideoConditionalPipeline, scene: Scene, change: Change | None = None, conditioning=True) -> Report:
    return measure(pipe, scene, change, conditioning, seed=0, velocity_frames=MEASURED)


def control(pipe: VideoConditionalPipeline, controls: dict[Scene, Report], scene: Scene) -> Report:
    if scene not in controls:
        controls[scene] = generate(pipe, scene)
    return controls[scene]


def found(report: Report) -> bool:
    """The shape was tracked: a failed check below means it was elsewhere, not missing."""
    return math.isfinite(report.path_error) and all(math.isfinite(v) for v in report.velocity)


def moves(report: Report, direction: str) -> bool:
    unit = DIRECTIONS[direction]
    return report.along(unit) >= MIN_SPEED and abs(report.across(unit)) <= MAX_SIDEWAYS


def stays_on_path(report: Report) -> bool:
    return report.path_error <= PATH_PX


@pytest.mark.parametrize("scene", SCENES.values(), ids=lambda s: f"{s.colour}-{s.shape}-{s.direction}")
def test_demo_continues_motion(pipe, controls, scene):
    """The shape keeps its path: within PATH_PX of where it truly goes, moving its way at >= MIN_SPEED,
    in its colour to the end of the video."""
    report = control(pipe, controls, centred(scene))
    assert stays_on_path(report), report
    assert moves(report, scene.direction), report
    assert report.colour_share(scene.colour) >= COLOUR_SHARE, report
    assert report.colour_share(scene.colour, PATH_FRAMES, None) >= HOLD_SHARE, report


@pytest.mark.parametrize(("scene", "colour"), COLOUR_CASES, ids=lambda c: c if isinstance(c, str) else c.colour)
def test_demo_follows_prompt2_colour(pipe, controls, scene, colour):
    """'the red square turns blue': the shape takes the new colour at the switch, keeps it to the end and
    keeps moving on its path; continued under its own caption instead (the control), it shows that colour
    in at most CONTROL_SHARE of its frames."""
    scene = centred(scene)
    asked = generate(pipe, scene, Change(CONDITIONING, colour=colour))
    assert asked.colour_share(colour) >= COLOUR_SHARE, asked
    assert asked.colour_share(colour, PATH_FRAMES, None) >= HOLD_SHARE, asked
    assert stays_on_path(asked) and moves(asked, scene.direction), asked
    assert control(pipe, controls, scene).colour_share(colour, 0, None) <= CONTROL_SHARE, controls[scene]


@pytest.mark.parametrize(
    ("scene", "direction"), DIRECTION_CASES, ids=lambda c: c if isinstance(c, str) else f"{c.colour}-{c.direction}"
)
def test_demo_follows_prompt2_direction(pipe, scene, direction):
    """'the red square moves up': from the switch on, the shape moves up instead of right; reversals
    ('moves to the left' after moving right) included."""
    report = generate(pipe, centred(scene, direction), Change(CONDITIONING, direction=direction))
    assert moves(report, direction), report
    assert stays_on_path(report), report
    assert report.colour_share(scene.colour, 0, None) >= HOLD_SHARE, report


def test_demo_checks_fail_without_conditioning_or_kv_cache(pipe, controls):
    """The checks above depend on the engine carrying the video forward. Without the conditioning frames
    (text-to-video from the same prompts) the shape appears elsewhere, off its path by more than PATH_PX. With
    a KV cache that keeps no past frame (local_attn_size = one block, no sink: each block sees only itself) it
    is off its path and no longer moves right."""
    scene, blue = centred(SCENES["right"]), Change(CONDITIONING, colour="blue")
    assert stays_on_path(control(pipe, controls, scene)) and stays_on_path(generate(pipe, scene, blue))

    for report in (generate(pipe, scene, conditioning=False), generate(pipe, scene, blue, conditioning=False)):
        assert found(report) and not stays_on_path(report), report

    no_past = demo_pipeline("model_kwargs.local_attn_size=3", "model_kwargs.sink_size=0")
    report = generate(no_past, scene)
    assert found(report) and not stays_on_path(report) and not moves(report, scene.direction), report
    report = generate(no_past, scene, blue)
    assert found(report) and not stays_on_path(report), report


def test_scenes_are_placed_so_their_measured_path_meets_no_wall():
    """`centred` places every scene of the tests inside the frame with its measured path clear of the walls,
    and refuses a path longer than the frame has room for (rather than starting the shape outside it)."""
    for scene in SCENES.values():
        for turn in (None, *DIRECTIONS):
            placed = centred(scene, turn)
            change = Change(CONDITIONING, direction=turn) if turn else None
            states = trajectory(placed, CONDITIONING + MEASURED, HEIGHT, WIDTH, change)
            changes = sum(tuple(a.velocity) != tuple(b.velocity) for a, b in pairwise(states))
            assert changes == (turn not in (None, scene.direction)), (scene, turn, placed)  # only the turn
            half = placed.size / 2
            assert half <= min(placed.position) and max(placed.position) <= HEIGHT - half, (scene, turn, placed)
    with pytest.raises(ValueError, match="needs"):
        demo_eval.centred(SCENES["right"], CONDITIONING, MEASURED + 1, HEIGHT, WIDTH)


def test_velocity_is_the_least_squares_slope_and_skips_missing_frames():
    t = torch.arange(6, dtype=torch.float32)
    centroids = torch.stack([2.0 - 0.5 * t, 1.0 + 1.5 * t], dim=1)
    centroids[2] = float("nan")  # a frame where the shape was not found
    assert velocity(centroids) == pytest.approx((-0.5, 1.5))


def test_evaluate_reports_every_kind_with_and_without_conditioning(pipe):
    report = evaluate(pipe, num_clips=3, seed=1)
    kinds = [f"{k}/{m}" for k in ("continue", "colour", "direction") for m in ("conditioned", "unconditioned")]
    assert sorted(report) == sorted(kinds)
    for values in report.values():
        assert set(values) == {
            "path_error",
            "velocity_error",
            "colour_first_block",
            "colour_later",
            "path_error_per_window",
        }
        # 12 latent frames = 45 video frames, 9 of them conditioning: 36 generated, 3 windows of PATH_FRAMES
        assert len(values["path_error_per_window"]) == 3
        assert values["path_error_per_window"][0] == pytest.approx(values["path_error"], abs=0.01)
        assert 0 <= values["colour_first_block"] <= 1 and values["path_error"] >= 0
    assert report["continue/conditioned"]["path_error"] < report["continue/unconditioned"]["path_error"]


def test_eval_script_reports_the_error_per_window_of_a_long_rollout(capsys, monkeypatch):
    """`scripts/eval_demo.py --latent_frames`: rollouts past the config's length, the error per window; the
    speed ratio per world speed; `--long`: the long cases' measures (shortened here to 24 latent frames,
    the switch at 15, to keep the test quick), and with `--long_noise_seeds` each case again from another
    draw of the noise."""
    monkeypatch.setattr(demo_eval, "LONG_FRAMES", 24)
    monkeypatch.setattr(demo_eval, "LONG_SWITCH", 15)
    eval_demo = script_module("scripts/eval_demo.py")
    model = f"wan_model_dir={REPO / 'demo_model'}"
    argv = ["--config_path", str(DEMO_CONFIG), "--clips", "1", "--latent_frames", "18", "--speed_clips", "1"]
    eval_demo.main([*argv, "--long", "--long_seeds", "5000", "--long_noise_seeds", "3", model])
    report = json.loads(capsys.readouterr().out)
    assert report["settings"]["overrides"] == [model, "num_output_frames=18"]
    windows = report["continue/conditioned"]["path_error_per_window"]
    assert len(windows) == -(-(4 * 18 - 3 - 9) // PATH_FRAMES) == 5  # 60 generated frames
    assert all(w >= 0 for w in windows)
    assert sorted(report["speed_ratio"]) == sorted(f"{speed:g}" for speed in SPEEDS)
    assert all(r["clips"] == 1 and 0 < r["mean"] < 3 for r in report["speed_ratio"].values())
    draws = report["long_noise_seeds"]["3"]  # every case again from noise seed 3
    cases = [(report["long"], LONG_WORLD_SEED), (report["long_seeds"]["5000"], 5000)]
    cases += [(draws[str(LONG_WORLD_SEED)], LONG_WORLD_SEED), (draws["5000"], 5000)]
    for long_report, seed in cases:
        clips = demo_eval.long_clips(seed=seed)
        for kind, clip in zip(("colour", "direction"), clips, strict=True):
            long = long_report[kind]
            assert len(long["windows"]) == (4 * 24 - 3 - 9) // PATH_FRAMES == 7  # whole windows of 84 frames
            assert 0 <= long["one_blob"] <= 1 and 0 <= long["colour_shown"] <= 1
            assert long["failures"] == demo_eval.long_failures(long)
            assert getattr(clip.change, kind) is not None  # each seed's own case of that kind
    assert demo_eval.long_clips(seed=5000)[0].scene != demo_eval.long_clips()[0].scene  # other clips
    held = sum(not long_report[kind]["failures"] for long_report, _ in cases for kind in ("colour", "direction"))
    assert report["long_held"] == f"{held} of 8"
    for kind in ("colour", "direction"):  # another draw of the noise, not the same rollout again
        assert draws[str(LONG_WORLD_SEED)][kind]["windows"] != report["long"][kind]["windows"]
    for bad, message in (
        (["--long_seeds", "5000"], "needs --long"),
        (["--long_noise_seeds", "1"], "needs --long"),
        (["--long", "--long_noise_seeds", "1,0"], "own noise"),
        (["--long", "--long_seeds", "50a"], "integers separated by commas"),
        (["--long", "--long_seeds", "5000,0"], "own seed"),
    ):
        with pytest.raises(SystemExit):
            eval_demo.main([*argv, *bad, model])
        assert message in capsys.readouterr().err


# Issue 19: the first output frame is the VAE's reconstruction of the first conditioning frame, which the
# causal VAE encodes and decodes alone. Measured on FIRST_FRAME_CLIPS unseen clips (world seed
# LONG_WORLD_SEED, CPU, 2026-12-01): the eighth session's decoder gave their colour in 0.79 of frame 0s (red in
# none of 20, coming back yellow) against 0.999 of the later frames. The shipped decoder is that one fine-tuned
# on its own training clips with frame 0 weighted 8x, decoding the posterior mean
# (train_demo.py --first_frame_weight 8 --decoder_mean), the encoder frozen.
FIRST_FRAME_CLIPS = 96
FIRST_FRAME_SHARE = 0.95  # least share of frame 0s whose shape has the rendered colour
FIRST_FRAME_COLOUR_SHARE = 0.85  # ... and of each colour's frame 0s


def first_frame_colour():
    return script_module("scripts/experiments/first_frame_colour.py")


def test_demo_vae_keeps_the_first_frames_colour(pipe):
    """Frame 0 of unseen clips, streamed through the shipped VAE as the pipeline streams it, has the shape's
    colour (1-frame clips: `test_first_frame_of_a_clip_depends_on_its_first_frame_alone`)."""
    ffc = first_frame_colour()
    clips = ffc.unseen_clips(FIRST_FRAME_CLIPS, LONG_WORLD_SEED, latent_frames=1)
    report = ffc.colour_shares(pipe.vae.vae, clips, batch=FIRST_FRAME_CLIPS)
    assert report["frame0"]["all"]["n"] == FIRST_FRAME_CLIPS and report["later"]["all"]["n"] == 0
    assert report["frame0"]["all"]["share"] >= FIRST_FRAME_SHARE, report
    assert all(report["frame0"][c]["share"] >= FIRST_FRAME_COLOUR_SHARE for c in COLOURS), report


def test_first_frame_of_a_clip_depends_on_its_first_frame_alone(pipe):
    """The causal VAE decodes frame 0 of a whole 45-frame round trip as it decodes a 1-frame clip of the same
    scene: the first-frame test above measures what the pipeline shows, at a 45th of the cost."""
    ffc = first_frame_colour()
    long = ffc.unseen_clips(1, LONG_WORLD_SEED, latent_frames=12)[0]
    short = ffc.unseen_clips(1, LONG_WORLD_SEED, latent_frames=1)[0]
    assert torch.equal(long.video[:, 0], short.video[:, 0])  # the same scene at frame 0
    _, whole = vae_round_trip(pipe.vae.vae, long.video[None], frames_per_block=3)
    _, alone = vae_round_trip(pipe.vae.vae, short.video[None], frames_per_block=3)
    assert whole.shape[2] == long.video.shape[1] and alone.shape[2] == 1
    torch.testing.assert_close(whole[:, :, 0], alone[:, :, 0], rtol=0, atol=1e-5)


def assert_long_video_holds(m: dict) -> None:
    """The bounds of test_demo_long_rollout (`demo_eval.long_failures`) on `long_measures`' `m`."""
    failures = demo_eval.long_failures(m)
    assert not failures, (failures, m)


def test_long_failures_name_each_bound_missed():
    """`long_failures`: nothing for measures within every bound; each bound missed by name, the growth bound
    taken from the first windows (at least LONG_FLOOR_PX)."""
    good = {
        "bounces": 6,
        "windows": [1.0, 2.0, 2.5],
        "first": 1.0,
        "last": 2.9,
        "one_blob": 0.99,
        "colour_before": 1.0,
        "colour_after": 0.95,
        "turn": 0.9,
    }
    assert demo_eval.long_failures(good) == []
    assert demo_eval.long_failures({**good, "last": 3.1}) == ["last windows px: 3.1 vs <= 3.00"]
    assert demo_eval.long_failures({**good, "first": 2.0, "last": 3.9}) == []  # 2 x 2.0
    bad = {**good, "bounces": 1, "windows": [1.0, 6.0], "one_blob": 0.5, "colour_after": 0.2, "turn": -1.0}
    names = [f.split(":")[0] for f in demo_eval.long_failures(bad)]
    assert names == ["bounces", "worst window px", "one blob", "colour after", "turn"]
    assert demo_eval.long_failures({**bad, "turn": None})[-1].startswith("colour after")  # a colour change's


@pytest.fixture(scope="module")
def long_references(pipe) -> list[torch.Tensor]:
    return demo_eval.long_references(pipe)


@pytest.mark.parametrize("kind", ["colour", "direction"])
def test_long_measures_pass_the_vae_round_trip_of_the_truth(pipe, long_references, kind):
    """The instrument of test_demo_long_rollout: the true clip through the VAE alone, measured as a generated
    video, meets every bound (so a generator whose latents were the encoder's would pass). Measured against
    the rendered frames instead, it would not: the decoder shows the direction case's square as more than
    LONG_AREA[1] times its rendered area in 30% of frames, and the colour case's red as another colour in
    21% (CPU, 2026-11-30, the world and VAE of then)."""
    index = ["colour", "direction"].index(kind)
    clip, reference = long_clips()[index], long_references[index]
    m = long_measures(clip, reference, reference, CONDITIONING)
    assert_long_video_holds(m)
    assert max(m["windows"]) <= 1.5 and m["one_blob"] == 1.0, m  # the decoder's own path error is small
    assert (m["turn"] is None) == (kind == "colour"), m  # judged after a change of direction only


def test_a_colour_change_can_meet_a_wall_where_the_turn_would_be_measured():
    """Why `long_measures` judges the turn after a change of direction only: the test's colour case bounces
    within the LONG_TURN_FRAMES after its switch, so its true displacement there is a frame's step, and a pixel
    of centroid noise would halve the share; a change of direction always has that room (ROOM_FRAMES)."""
    colour, direction = long_clips()
    for clip in (colour, direction):
        states = clip.trajectory()[clip.change.frame : clip.change.frame + demo_eval.LONG_TURN_FRAMES]
        flips = sum(bool(np.any(np.multiply(a.velocity, b.velocity) < 0)) for a, b in pairwise(states))
        assert flips == (1 if clip is colour else 0), (clip.change, flips)


# Issue 19: the shipped weights were trained for length on the demo world's whole latent cells (README, "The
# demo model"); before that they drifted past 45 video frames (7-39 px per window at 100 latent frames). The
# weights before these failed seed 5001's direction case at this draw of the noise (seed 0): after the late turn
# the shape crept back along its old axis to 6.7 px off. These were trained on contexts that jump off the path at
# a change of direction while the continuation stays on it (`train_demo.py --turn_creep 1.0 --turn_jump`), and
# hold it at 1.3 px with the shipped decoder, F1 (1.46 with the one before; CPU, 2026-12-01). Each case is one
# draw of the noise; `eval_demo.py --long_noise_seeds` rolls out others.
# One pair of clips is a thin sample: a weight soup of the seventh session passed both of the test's own cases
# and held none of six more (BENCHMARKS.md). So a case that holds goes on to the same case from LONG_MORE_SEEDS,
# world streams no training reads (`eval_demo.py --long_seeds`).
LONG_MORE_SEEDS = (5000, 5001)


@pytest.mark.parametrize("kind", ["colour", "direction"])
def test_demo_long_rollout(long_references, kind):
    """Issue 19: 397-frame rollouts from unseen clips stay on the physical path (bounces included) within
    demo_eval.LONG_WINDOW_PX in every window and an error that does not grow (LONG_GROWTH), show one blob of
    stable size and its colour throughout (as the VAE shows the true clip: `long_reference`), and follow a late
    prompt switch of colour or direction: the test's own clip of that kind, then those of LONG_MORE_SEEDS."""
    pipe = demo_pipeline(f"num_output_frames={LONG_FRAMES}")
    index = ["colour", "direction"].index(kind)
    assert_long_video_holds(demo_eval.long_case_measures(pipe, long_clips()[index], long_references[index]))
    for seed in LONG_MORE_SEEDS:
        assert_long_video_holds(demo_eval.long_case_measures(pipe, long_clips(seed=seed)[index]))


def test_noise_splice_changes_only_the_blocks_it_names(capsys, monkeypatch):
    """`scripts/experiments/noise_splice.py`: a block that takes another seed's noise changes from that block on,
    and the windows before it are the unspliced rollout's; a splice of one block and one of every block from
    it agree on that block and differ after it. The two generators draw in lockstep, so a block left alone
    after a splice gets its own draws (checked on a stub, without a rollout). Bad input (a frame where no
    block starts, the rollout's own seed) gets a one-line error. Shortened as the eval script's test is: 24
    latent frames, the switch at 15."""
    monkeypatch.setattr(demo_eval, "LONG_FRAMES", 24)
    monkeypatch.setattr(demo_eval, "LONG_SWITCH", 15)
    splice = script_module("scripts/experiments/noise_splice.py")

    class Stub:  # draws as the pipeline does: one tensor per call, from the generator it is given
        device = "cpu"

        def _noise_like(self, block, batch_size, rng):
            return torch.randn(2, generator=rng)

    stub = Stub()
    undo = splice.splice_noise(stub, 1, lambda block: block.start == 6)
    seed0, seed1 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    own, other = (
        [torch.randn(2, generator=seed0) for _ in range(12)],
        [torch.randn(2, generator=seed1) for _ in range(12)],
    )
    rng = torch.Generator().manual_seed(0)
    got = [stub._noise_like(Block(0, start, 3, False), 1, rng) for start in (3, 6, 9) for _ in range(4)]
    for i, tensor in enumerate(got):  # blocks 3 and 9: seed 0's draws 0-3 and 8-11; block 6: seed 1's draws 4-7
        assert torch.equal(tensor, other[i] if 4 <= i < 8 else own[i]), i
    undo()
    assert stub._noise_like.__func__ is Stub._noise_like

    argv = ["--config_path", str(DEMO_CONFIG), "--world_seed", "0", f"wan_model_dir={REPO / 'demo_model'}"]
    splice.main([*argv, "--from_blocks", "15", "--only_blocks", "15"])
    runs = {run["splice"]: run["windows"] for run in map(json.loads, capsys.readouterr().out.splitlines())}
    assert list(runs) == ["alone", "from 15", "only 15"]
    alone, whole, one = runs["alone"], runs["from 15"], runs["only 15"]
    block = (15 - 3) // 3  # the window of 12 video frames (a block of 3 latent frames) that latent frame 15 starts
    assert alone[:block] == whole[:block] == one[:block]  # the blocks before the splice: the same draws
    assert whole[block] == one[block] != alone[block]  # block 15: seed 1's draws in both splices
    assert whole[block + 1 :] != one[block + 1 :]  # after it, only `from` keeps drawing seed 1's noise
    for bad, message in (
        (["--only_blocks", "16"], "no generated block starts there"),
        (["--other_seed", "0", "--from_blocks", "15"], "the rollout's own seed"),
    ):
        with pytest.raises(SystemExit):
            splice.main([*argv, *bad])
        assert message in capsys.readouterr().err


def test_leg_speeds_are_the_middle_of_each_leg():
    """`demo_eval.leg_speeds`: a shape bouncing at 2 px/frame between 10 and 50 px, with a turn that lingers a
    frame at the far wall and a frame without a shape, moves 2 px/frame in every leg; moved 2.1 px/frame
    instead, it shows that speed, which the legs' lengths alone would not tell from a late turn."""

    def bouncing(speed: float) -> np.ndarray:
        legs = [np.arange(10, 50, speed), [50.0], np.arange(50, 10, -speed), np.arange(10, 50, speed)]
        return np.concatenate(legs).astype(float)

    positions = bouncing(2.0)
    positions[5] = np.nan
    found = demo_eval.turns(positions)
    assert len(found) == 2
    assert demo_eval.leg_speeds(positions, [0, *found, len(positions) - 1]) == pytest.approx([2.0] * 3)
    faster = bouncing(2.1)
    assert demo_eval.leg_speeds(faster, [0, *demo_eval.turns(faster), len(faster) - 1]) == pytest.approx([2.1] * 3)


def test_turns_are_where_a_rendered_shape_bounces():
    """`demo_eval.turns` (long_measures' bounces, scripts/experiments/demo_bounces.py): the turns it finds in
    the rendered colour case, 397 frames along one axis, are the world's own reversals of the velocity, within
    a frame each."""
    clip = long_clips()[0]  # the colour case: one axis of motion throughout
    states = clip.trajectory()
    axis = int(np.argmax(np.abs(states[0].velocity)))
    along = np.array([state.velocity[axis] for state in states])
    reversals = [i for i in range(1, len(along)) if along[i] * along[i - 1] < 0]
    centroids = foreground_centroid(clip.video).numpy()
    assert demo_eval.motion_axis(centroids) == axis
    found = demo_eval.turns(centroids[:, axis])
    assert len(reversals) >= 5 and len(found) == len(reversals), (found, reversals)  # 16 bounces
    assert all(abs(f - r) <= 1 for f, r in zip(found, reversals, strict=True)), (found, reversals)
