"""The jobs as users run them: input files in, mp4s out, one-line errors, exit codes.

Everything runs the real code path with the tiny random model on CPU, kept short with
`num_output_frames=6` (6 latent frames -> 21 video frames at 32x48).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from conftest import REPO, TINY_CONFIG, tiny_config

import longlive.cli as cli
from longlive.config import load_config
from longlive.datasets import VideoConditionalDataset
from longlive.jobs import Request
from longlive.pipeline import VideoConditionalPipeline
from longlive.vae import StreamingVAE
from longlive.video_io import VideoReadError, frames_to_tensor, load_image, load_video, read_frames, write_video

T2V_CONFIG = REPO / "configs" / "tiny_t2v.yaml"
EXAMPLE_JSONL = REPO / "example" / "video_conditional_example.jsonl"
EXAMPLE_VIDEO = REPO / "example" / "videos" / "red_square_right.mp4"
T = 6  # num_output_frames in every run here
HEIGHT, WIDTH = 32, 48  # the tiny configs' resolution


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _rank0(monkeypatch):
    """Output names carry the process rank; run as rank 0 whatever the environment says."""
    monkeypatch.delenv("RANK", raising=False)


def read_mp4(path: Path) -> np.ndarray:
    return iio.imread(path, plugin="FFMPEG")  # [N, H, W, 3]


def read_results(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]


def run_job(command: str, config: Path, *overrides: str) -> int:
    return cli.main([command, "--config_path", str(config), f"num_output_frames={T}", *overrides])


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def sample_line(video_path: str | Path, prompt1: str = "a red square", prompt2: str = "it turns blue") -> str:
    return json.dumps({"video_path": str(video_path), "prompt1": prompt1, "prompt2": prompt2})


def moving_square(frames: int, height: int, width: int) -> torch.Tensor:
    """A bright square moving on a dark background: [3, frames, height, width] in [-1, 1]."""
    video = torch.full((3, frames, height, width), -0.8)
    for i in range(frames):
        video[:, i, 4 : 4 + height // 3, 2 * i : 2 * i + width // 4] = 0.8
    return video


# -- the video-conditional job --------------------------------------------------------------------


def test_video_conditional_job_writes_one_mp4_per_line(tmp_path):
    out = tmp_path / "out"
    assert run_job("video-conditional", TINY_CONFIG, f"output_folder={out}", f"data_path={EXAMPLE_JSONL}") == 0

    cfg = tiny_config(f"num_output_frames={T}")
    lines = len(VideoConditionalDataset(EXAMPLE_JSONL))
    # seed = cfg.seed + idx * num_samples + j, with num_samples = 1
    expected = {f"rank0-{idx}-{cfg.seed + idx * cfg.num_samples}_regular.mp4" for idx in range(lines)}
    assert {p.name for p in out.iterdir()} == expected | {"results.jsonl"}  # no partial files left behind
    for name in expected:
        frames = read_mp4(out / name)
        assert frames.shape == (4 * T - 3, HEIGHT, WIDTH, 3)

    records = read_results(out)  # one line per sample, by index, with its inputs as parsed
    dataset = VideoConditionalDataset(EXAMPLE_JSONL)
    assert [r["index"] for r in records] == list(range(lines))
    for idx, record in enumerate(records):
        assert record["status"] == "ok" and record["error"] is None and record["rank"] == 0
        assert record["inputs"] == {key: dataset[idx][key] for key in ("video_path", "prompt1", "prompt2")}
        assert record["seeds"] == [idx]
        assert record["outputs"] == [str(out / f"rank0-{idx}-{idx}_regular.mp4")]
        assert record["latents"] == []  # save_latents is off
        timings = record["timings"]
        assert set(timings) == {"load_s", "generate_s", "write_s", "total_s", "first_block_s", "second_half_fps"}
        assert all(value >= 0 for value in timings.values())
        assert timings["generate_s"] > 0 and timings["total_s"] >= timings["generate_s"]
        assert 0 < timings["first_block_s"] <= timings["generate_s"]
        assert timings["second_half_fps"] > 0  # the tiny rollout has several blocks


def test_seeds_follow_sample_index_and_num_samples(tmp_path):
    out = tmp_path / "out"
    overrides = (f"output_folder={out}", f"data_path={EXAMPLE_JSONL}", "seed=5", "num_samples=2", "inference_iter=1")
    assert run_job("video-conditional", TINY_CONFIG, *overrides) == 0
    # inference_iter=1: sample 0 only, seeds 5 + 0 * 2 + j for j in 0, 1
    videos = ["rank0-0-5_regular.mp4", "rank0-0-6_regular.mp4"]
    assert sorted(p.name for p in out.iterdir()) == [*videos, "results.jsonl"]
    (record,) = read_results(out)
    assert record["seeds"] == [5, 6] and record["outputs"] == [str(out / name) for name in videos]
    first, second = (read_mp4(out / f"rank0-0-{seed}_regular.mp4").astype(int) for seed in (5, 6))
    cond = 4 * 3 - 3  # 9 conditioning frames -> 3 latents -> the first 9 decoded frames
    assert np.abs(first[cond:] - second[cond:]).max() > 0  # the two seeds give different continuations


def test_seeds_differ_across_samples_and_repeats(tmp_path):
    """Two samples of the same prompt, two repeats each: seed + idx * num_samples + j, four different videos,
    each the rollout of its recorded seed (and only that seed)."""
    prompts = write_jsonl(tmp_path / "prompts.txt", ["a red square moves right"] * 2)
    out = tmp_path / "out"
    overrides = (f"output_folder={out}", f"data_path={prompts}", "seed=5", "num_samples=2", "save_latents=true")
    assert run_job("t2v", T2V_CONFIG, *overrides) == 0
    records = read_results(out)
    assert [r["seeds"] for r in records] == [[5, 6], [7, 8]]
    latents = {seed: torch.load(out / f"rank0-{r['index']}-{seed}_regular.pt") for r in records for seed in r["seeds"]}
    for a, b in [(5, 6), (5, 7), (6, 7), (7, 8), (6, 8), (5, 8)]:  # same prompt: only the seed tells them apart
        assert (latents[a] - latents[b]).abs().max() > 0.1, (a, b)

    pipe = VideoConditionalPipeline.from_config(load_config(T2V_CONFIG, [f"num_output_frames={T}", "seed=5"]))
    for seed in (6, 7):  # the second repeat of sample 0, the first of sample 1
        request = Request("a red square moves right")  # as the t2v job builds it
        blocks = pipe.stream(request.prompt1, request.prompt2, None, seed=seed)
        expected = torch.cat([block.latents[0].float() for block in blocks])  # [T, C, h, w], as saved
        torch.testing.assert_close(latents[seed], expected, atol=0, rtol=0)


def test_video_conditional_script_subprocess(tmp_path):
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "RANK"} | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "video_conditional_inference.py",
            "--config_path",
            "configs/tiny_video_conditional.yaml",
            f"num_output_frames={T}",
            f"output_folder={out}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = sorted(p.name for p in out.glob("*.mp4"))
    assert names == ["rank0-0-0_regular.mp4", "rank0-1-1_regular.mp4"]
    for name in names:
        assert read_mp4(out / name).shape == (4 * T - 3, HEIGHT, WIDTH, 3)
    assert [r["status"] for r in read_results(out)] == ["ok", "ok"]


def test_bad_samples_fail_alone_with_one_line_each(tmp_path, caplog, capsys):
    short = write_video(tmp_path / "short.mp4", moving_square(3, 96, 160), fps=16)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    data = write_jsonl(
        tmp_path / "samples.jsonl",
        [
            sample_line(EXAMPLE_VIDEO.resolve()),  # 0: good, absolute path
            '{"video_path": "x.mp4", "prompt1": "a",',  # 1: malformed JSON
            json.dumps({"video_path": str(EXAMPLE_VIDEO), "prompt1": "a red square"}),  # 2: no prompt2
            sample_line(EXAMPLE_VIDEO.resolve(), prompt1="   "),  # 3: empty prompt1
            sample_line(tmp_path / "missing.mp4"),  # 4: no such video
            sample_line(short),  # 5: 3 frames, 9 needed
            sample_line(corrupt),  # 6: random bytes
        ],
    )
    out = tmp_path / "out"
    caplog.set_level(logging.INFO)
    assert run_job("video-conditional", TINY_CONFIG, f"output_folder={out}", f"data_path={data}") == 1

    assert sorted(p.name for p in out.iterdir()) == ["rank0-0-0_regular.mp4", "results.jsonl"]
    assert read_mp4(out / "rank0-0-0_regular.mp4").shape == (4 * T - 3, HEIGHT, WIDTH, 3)

    failures = {
        r.args[0]: r.getMessage() for r in caplog.records if r.name == "longlive.jobs" and r.levelno == logging.ERROR
    }
    assert sorted(failures) == [1, 2, 3, 4, 5, 6]
    expected = {
        1: ("not valid JSON", f"{data}:2"),
        2: ("prompt2", "missing", f"{data}:3"),
        3: ("prompt1", "empty", f"{data}:4"),
        4: ("not found", "missing.mp4"),
        5: ("3 frames", "9 are needed", "short.mp4"),
        6: ("cannot read video", "corrupt.mp4"),
    }
    for idx, words in expected.items():
        first_line = failures[idx].splitlines()[0]
        assert first_line.startswith(f"sample {idx} failed: ")
        for word in words:
            assert word in first_line, (idx, failures[idx])
    for idx in expected:
        assert "\n" not in failures[idx], failures[idx]

    records = read_results(out)  # every sample has its line, the failed ones with the same one-line error
    assert [(r["index"], r["status"]) for r in records] == [(0, "ok")] + [(idx, "failed") for idx in expected]
    for record in records[1:]:
        assert failures[record["index"]] == f"sample {record['index']} failed: {record['error']}"
        assert record["outputs"] == [] and record["timings"]["generate_s"] == 0
    data_lines = data.read_text(encoding="utf-8").splitlines()
    assert records[1]["inputs"] == {"line": data_lines[1]}  # unparsable: recorded as written
    assert records[2]["inputs"] == {"line": data_lines[2]}
    assert records[4]["inputs"]["video_path"] == str(tmp_path / "missing.mp4")  # parsed, then failed

    assert all(r.exc_info is None for r in caplog.records)
    assert "Traceback" not in capsys.readouterr().err
    assert not any("Traceback" in r.getMessage() for r in caplog.records)


def test_corrupt_video_error_is_one_line(tmp_path):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError) as info:
        read_frames(corrupt, 9)
    assert "\n" not in str(info.value), str(info.value)[:300]


def test_unreadable_video_prints_only_our_line(tmp_path, capfd):
    """decord and ffmpeg write to fd 2 from C; none of it reaches the terminal, only our error (and the
    video is read again fine afterwards, so the descriptor is restored)."""
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(EXAMPLE_VIDEO.read_bytes()[:3000])
    with pytest.raises(VideoReadError, match="cannot read video .*truncated.mp4"):
        read_frames(truncated, 9)
    assert capfd.readouterr().err == ""
    assert read_frames(EXAMPLE_VIDEO, 9).shape[0] == 9
    print("stderr works", file=sys.stderr)
    assert capfd.readouterr().err == "stderr works\n"


def test_a_directory_is_not_reported_as_missing(tmp_path):
    with pytest.raises(VideoReadError, match="is a directory, not a video file"):
        read_frames(tmp_path, 9)
    with pytest.raises(VideoReadError, match="is a directory, not an image file"):
        load_image(tmp_path, HEIGHT, WIDTH)


def test_video_at_tiny_resolution_reads_back(tmp_path):
    """A job's own 32x48 output, fed back in as a conditioning video."""
    path = write_video(tmp_path / "tiny.mp4", moving_square(9, HEIGHT, WIDTH), fps=16)
    video = load_video(path, 9, HEIGHT, WIDTH)
    assert video.shape == (3, 9, HEIGHT, WIDTH)


# -- configuration errors --------------------------------------------------------------------------


def _no_model(cls, *args, **kwargs):
    raise AssertionError("a model was built before the config was checked")


@pytest.mark.parametrize(
    ("config", "override", "words"),
    [
        (TINY_CONFIG, "no_such_key=1", ("no_such_key", "unknown key")),
        (REPO / "configs" / "does_not_exist.yaml", None, ("config file not found", "does_not_exist.yaml")),
        (TINY_CONFIG, "num_output_frames=abc", ("num_output_frames", "wrong type")),
        (REPO / "example" / "demo" / "output_strip.png", None, ("output_strip.png", "not a text (YAML) file")),
        (EXAMPLE_JSONL, None, ("video_conditional_example.jsonl", "not valid YAML")),
        (TINY_CONFIG, f"data_path={REPO / 'example'}", ("data_path", "is a directory")),
        (TINY_CONFIG, f"output_folder={EXAMPLE_JSONL}/out", ("output_folder", "cannot be created")),
        (TINY_CONFIG, f"output_folder={EXAMPLE_JSONL}", ("output_folder", "not a folder")),
    ],
    ids=["unknown-key", "missing-file", "wrong-type", "binary", "not-yaml", "data-dir", "out-under-file", "out-file"],
)
def test_config_errors_exit_2_with_one_line(monkeypatch, capsys, config, override, words):
    monkeypatch.setattr(VideoConditionalPipeline, "from_config", classmethod(_no_model))
    argv = ["video-conditional", "--config_path", str(config)]
    assert cli.main(argv + ([override] if override else [])) == 2

    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("longlive: error:")
    for word in words:
        assert word in lines[0]


def _no_ffmpeg_program():
    raise RuntimeError("No ffmpeg exe could be found. Install ffmpeg on your system.")


@pytest.mark.parametrize("missing", ["plugin", "program"])
@pytest.mark.parametrize("command", ["t2v", "session"])
def test_a_missing_mp4_writer_fails_before_any_model_is_built(monkeypatch, capsys, tmp_path, command, missing):
    """Without imageio's ffmpeg plugin, or the program it runs, no video could be written: one line,
    before any work is done."""
    import imageio_ffmpeg

    if missing == "plugin":
        monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # import fails as if not installed
    else:
        monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", _no_ffmpeg_program)
    monkeypatch.setattr(VideoConditionalPipeline, "from_config", classmethod(_no_model))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red square\n", encoding="utf-8")
    argv = [command, "--config_path", str(T2V_CONFIG), f"data_path={prompts}", f"output_folder={tmp_path}"]
    assert cli.main(argv + (["--prompt", "a red square"] if command == "session" else [])) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("longlive: error: writing mp4s needs"), lines
    assert ("not installed" if missing == "plugin" else "No ffmpeg exe could be found") in lines[0]


def test_unset_data_path_is_a_config_error(capsys):
    assert run_job("t2v", T2V_CONFIG, "data_path=null") == 2
    assert capsys.readouterr().err.startswith("longlive: error:")


# -- text-to-video job ---------------------------------------------------------------------------


def test_t2v_job_writes_one_video_per_prompt(tmp_path):
    """Sample i is file line i + 1: the blank line 2 is recorded as skipped, and line 3 stays sample 2."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red square moves right\n\na blue circle bounces\n", encoding="utf-8")
    out = tmp_path / "out"
    assert run_job("t2v", T2V_CONFIG, f"output_folder={out}", f"data_path={prompts}") == 0
    names = sorted(p.name for p in out.glob("*.mp4"))
    assert names == ["rank0-0-0_regular.mp4", "rank0-2-2_regular.mp4"]
    for name in names:
        assert read_mp4(out / name).shape == (4 * T - 3, HEIGHT, WIDTH, 3)
    records = read_results(out)
    assert [r["inputs"] for r in records] == [
        {"prompts": "a red square moves right"},
        {"line": ""},
        {"prompts": "a blue circle bounces"},
    ]
    assert [r["status"] for r in records] == ["ok", "skipped", "ok"]
    assert records[1]["error"] == f"{prompts}:2: blank line, nothing to generate"


def test_blank_jsonl_line_keeps_line_numbers_and_indices(tmp_path, caplog):
    """A blank line is skipped visibly; the bad line after it is named by its own file line, and the
    sample after that keeps its index (and so its seed and output name)."""
    data = write_jsonl(
        tmp_path / "data.jsonl", [sample_line(EXAMPLE_VIDEO), "", "{not json", sample_line(EXAMPLE_VIDEO)]
    )
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        code = run_job("video-conditional", TINY_CONFIG, f"output_folder={out}", f"data_path={data}")
    assert code == 1  # line 3 fails
    records = read_results(out)
    assert [(r["index"], r["status"]) for r in records] == [(0, "ok"), (1, "skipped"), (2, "failed"), (3, "ok")]
    assert records[2]["error"].startswith(f"{data}:3: not valid JSON")
    assert records[3]["seeds"] == [3] and records[3]["outputs"] == [str(out / "rank0-3-3_regular.mp4")]
    assert f"sample 1 skipped: {data}:2: blank line" in caplog.text


# -- the pipeline directly -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipe() -> VideoConditionalPipeline:
    """Conditioning on 5 video frames (2 latents) of a 7-latent output: blocks [0,2) | [2,5) [5,7)."""
    return VideoConditionalPipeline.from_config(tiny_config("num_conditioning_frames=5", "num_output_frames=7"))


def with_config(pipe: VideoConditionalPipeline, *overrides: str) -> VideoConditionalPipeline:
    """The same components under another config (building them again costs time, not coverage)."""
    return VideoConditionalPipeline(tiny_config(*overrides), pipe.generator, pipe.vae, pipe.prompts, pipe.device)


def test_image_to_video(pipe):
    i2v = with_config(pipe, "num_conditioning_frames=1", f"num_output_frames={T}")
    image = moving_square(1, HEIGHT, WIDTH)[None]  # [1, 3, 1, H, W]
    result = i2v("a red square", "it turns blue", image, seed=0)

    assert result.num_conditioning_video_frames == 1
    assert result.latents.shape == (1, T, 16, HEIGHT // 8, WIDTH // 8)
    assert result.frames.shape == (1, 3, 4 * T - 3, HEIGHT, WIDTH)
    blocks = list(i2v.stream("a red square", "it turns blue", image, seed=0, decode=False))
    assert [(b.block.start, b.block.size) for b in blocks if b.block.conditioning] == [(0, 1)]
    torch.testing.assert_close(result.latents[:, :1], StreamingVAE(i2v.vae.vae).encode(image), atol=1e-5, rtol=0)


def test_text_to_video(pipe):
    result = pipe("a blue circle bounces", seed=0)  # no video: every latent frame is generated
    T_out = pipe.cfg.num_output_frames
    assert result.num_conditioning_video_frames == 0
    assert result.latents.shape == (1, T_out, 16, HEIGHT // 8, WIDTH // 8)
    assert result.frames.shape == (1, 3, 4 * T_out - 3, HEIGHT, WIDTH)
    assert bool((result.latents.flatten(2).abs().amax(dim=2) > 0).all())
    blocks = list(pipe.stream("a blue circle bounces", seed=0, decode=False))
    assert not any(b.block.conditioning for b in blocks)


def test_stream_blocks_in_order_cover_output(pipe):
    video = moving_square(8, HEIGHT, WIDTH)[None]  # 8 frames given, 5 requested and used
    T_out = pipe.cfg.num_output_frames
    blocks = list(pipe.stream("a red square", "it turns blue", video, seed=0))

    assert [b.block.index for b in blocks] == list(range(len(blocks)))
    flags = [b.block.conditioning for b in blocks]
    assert flags == sorted(flags, reverse=True) and flags[0] and not flags[-1]  # conditioning first
    assert [(b.block.start, b.block.end) for b in blocks] == [(0, 2), (2, 5), (5, 7)]
    position = 0
    for b in blocks:  # contiguous, no gap or overlap, ending at T
        assert b.block.start == position
        assert b.latents.shape[1] == b.block.size
        # the first latent frame decodes to 1 video frame, every later one to 4
        assert b.frames.shape[2] == 4 * b.block.size - (3 if b.block.start == 0 else 0)
        position = b.block.end
    assert position == T_out
    assert sum(b.frames.shape[2] for b in blocks) == 4 * T_out - 3

    # the stream and the whole call agree
    whole = pipe("a red square", "it turns blue", video, seed=0)
    torch.testing.assert_close(whole.latents, torch.cat([b.latents for b in blocks], dim=1))
    assert whole.num_conditioning_video_frames == 5


# -- inputs ----------------------------------------------------------------------------------------


def test_dataset_resolves_relative_video_paths(tmp_path, monkeypatch):
    data_dir, work_dir = tmp_path / "data", tmp_path / "work"
    (data_dir / "clips").mkdir(parents=True)
    work_dir.mkdir()
    shutil.copy(EXAMPLE_VIDEO, data_dir / "clips" / "a.mp4")
    jsonl = write_jsonl(data_dir / "samples.jsonl", [sample_line("clips/a.mp4"), sample_line("clips/none.mp4")])
    monkeypatch.chdir(work_dir)

    dataset = VideoConditionalDataset(jsonl)
    assert Path(dataset[0]["video_path"]) == data_dir / "clips" / "a.mp4"  # beside the JSONL
    assert dataset[1]["video_path"] == "clips/none.mp4"  # found nowhere: left as given, fails when read

    (work_dir / "clips").mkdir()
    shutil.copy(EXAMPLE_VIDEO, work_dir / "clips" / "a.mp4")
    assert dataset[0]["video_path"] == "clips/a.mp4"  # the working directory comes first


def test_longlive_import_path():
    import longlive.datasets
    import utils.dataset

    assert utils.dataset.VideoConditionalDataset is longlive.datasets.VideoConditionalDataset
    assert utils.dataset.TextDataset is longlive.datasets.TextDataset
    assert utils.dataset.ImageToVideoDataset is longlive.datasets.ImageToVideoDataset


@pytest.mark.parametrize(
    "shape",
    [(60, 200), (200, 60), (16, 20), (64, 96), (32, 48)],
    ids=["wide", "tall", "small", "same-aspect", "exact"],
)
def test_frames_to_tensor_covers_and_center_crops(shape):
    h, w = shape
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, h, w, 3), dtype=np.uint8)
    video = frames_to_tensor(frames, HEIGHT, WIDTH)
    assert video.shape == (3, 2, HEIGHT, WIDTH)
    assert video.dtype == torch.float32
    assert float(video.min()) >= -1 and float(video.max()) <= 1
    if shape == (HEIGHT, WIDTH):  # nothing to resize: the exact values
        expected = torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1
        torch.testing.assert_close(video, expected)


def test_frames_to_tensor_keeps_the_center():
    """A wide frame: white in the middle 60%, black at both sides; the crop sees only the white."""
    frames = np.zeros((1, 60, 200, 3), dtype=np.uint8)
    frames[:, :, 40:160] = 255
    video = frames_to_tensor(frames, HEIGHT, WIDTH)
    torch.testing.assert_close(video, torch.ones_like(video), atol=1e-3, rtol=0)
    # and tall: black bands at top and bottom are cropped away
    frames = np.zeros((1, 300, 100, 3), dtype=np.uint8)
    frames[:, 60:240] = 255
    video = frames_to_tensor(frames, HEIGHT, WIDTH)
    torch.testing.assert_close(video, torch.ones_like(video), atol=1e-3, rtol=0)
