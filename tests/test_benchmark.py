"""`longlive bench` on the tiny config (on the CPU, or on the GPU where there is one): the real benchmark
code path, its JSON line and its checks of a long video's cost per block (the speed itself is measured
on a GPU, BENCHMARKS.md)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY_CONFIG, tiny_config

from longlive.benchmark import benchmark_pipeline, profile_block, run_benchmark, steady_state
from longlive.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

FIELDS = {
    "fps_end_to_end",
    "generator_ms_per_block",
    "vae_ms_per_block",
    "first_frame_s",
    "total_s",
    "video_frames",
    "peak_vram_gib",
    "peak_vram_reserved_gib",
    "block_ms_first_tenth",
    "block_ms_last_tenth",
    "allocated_gib_after_first_block",
    "allocated_gib_after_first_tenth",
    "allocated_gib_at_end",
    "workload",
}


def test_benchmark_reports_every_figure_for_the_whole_video():
    cfg = tiny_config("num_output_frames=9", "fuse_vae_norms=true", "fuse_ffn_gelu=true")
    report = run_benchmark(cfg, warmup_runs=0)
    assert set(report) == FIELDS
    assert report["video_frames"] == 4 * 9 - 3  # text-to-video: every latent frame generated and decoded
    assert report["fps_end_to_end"] == pytest.approx(report["video_frames"] / report["total_s"], rel=0.01)
    assert 0 < report["first_frame_s"] <= report["total_s"]
    assert report["generator_ms_per_block"] > 0 and report["vae_ms_per_block"] > 0
    memory = [report[k] for k in ("peak_vram_gib", "peak_vram_reserved_gib", "allocated_gib_at_end")]
    if torch.cuda.is_available():  # the benchmark takes the GPU when there is one
        assert None not in memory and report["peak_vram_reserved_gib"] >= report["peak_vram_gib"]
    else:
        assert memory == [None, None, None]
    workload = report["workload"]
    geometry = [workload[k] for k in ("latent_frames", "frames_per_block", "window", "sink")]
    assert geometry == [9, 3, 6, 1]
    assert workload["steps"] == 4 and workload["resolution"] == [32, 48]
    assert workload["switches"] == ["fuse_vae_norms", "fuse_ffn_gelu"]  # the speed switches on, in README order


def test_steady_state_compares_the_first_and_last_tenth_after_the_first_block():
    block_s = [5.0] + [0.1] * 10 + [0.2] * 8 + [0.3] * 2  # 20 blocks after the first: tenths of 2
    report = steady_state(block_s, [1.0, 1.2, 1.4] + [1.5] * 18)
    assert report["block_ms_first_tenth"] == pytest.approx(100.0)
    assert report["block_ms_last_tenth"] == pytest.approx(300.0)  # a slowdown shows
    memory = ("allocated_gib_after_first_block", "allocated_gib_after_first_tenth", "allocated_gib_at_end")
    assert [report[key] for key in memory] == [1.0, 1.4, 1.5]
    assert steady_state([0.5], [None])["block_ms_first_tenth"] == pytest.approx(500.0)  # one block
    assert set(steady_state([], []).values()) == {None}  # nothing measured


def test_benchmark_times_the_pipeline_it_is_given(monkeypatch):
    """An experiment's modified pipeline is timed as given, and the workload is read from it."""
    pipe = benchmark_pipeline(tiny_config("num_output_frames=6"))
    monkeypatch.setattr("longlive.benchmark.benchmark_pipeline", lambda cfg: pytest.fail("pipeline rebuilt"))
    report = run_benchmark(tiny_config("num_output_frames=12"), warmup_runs=0, pipe=pipe)
    assert report["video_frames"] == 4 * 6 - 3 and report["workload"]["latent_frames"] == 6


def test_bench_command_prints_one_json_line_and_the_profile(capsys):
    assert main(["bench", "--config_path", str(TINY_CONFIG), "num_output_frames=6", "--profile"]) == 0
    first, *rest = capsys.readouterr().out.splitlines()
    assert set(json.loads(first)) == FIELDS
    assert any("Self CPU" in line for line in rest)  # the profiler's table


def test_profile_names_the_ops_that_took_the_time():
    table = profile_block(tiny_config("num_output_frames=6"), blocks=2, rows=5)
    assert "Name" in table and "aten::" in table


def test_bench_job_times_the_real_job(tmp_path, capsys, monkeypatch, caplog):
    """`longlive bench --job t2v`: the job runs (mp4s written, earlier outputs overwritten) and its JSON line
    gives frames/s over the samples after the first, the host memory figures and the startup phases (also
    logged at INFO), a compiled decoder's regions among them."""
    import logging

    from conftest import REPO

    monkeypatch.delenv("RANK", raising=False)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red square\na blue circle\n", encoding="utf-8")
    out = tmp_path / "out"
    args = ["bench", "--job", "t2v", "--config_path", str(REPO / "configs" / "tiny_t2v.yaml")]
    args += ["num_output_frames=6", f"output_folder={out}", f"data_path={prompts}", "compile_vae=true"]
    for _ in range(2):  # the second run regenerates both samples
        with caplog.at_level(logging.INFO, logger="longlive"):
            assert main(args) == 0
        report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert report["samples"] == 2 and report["video_frames_per_sample"] == 4 * 6 - 3
        assert report["fps_job"] == pytest.approx(21 / report["sample_s"][1], rel=0.01)
        assert report["peak_rss_gib"] >= report["rss_gib_at_end"] > 0
        assert report["job"] == "t2v" and report["workload"]["latent_frames"] == 6
        assert all(0 < first <= s for first, s in zip(report["first_block_s"], report["sample_s"], strict=True))
        assert all(fps > 0 for fps in report["second_half_fps"])  # 2 blocks of 3 latent frames each
        startup = report["startup"]
        phases = ("device_init", "generator_random_weights", "generator_adapt", "vae_random_weights", "vae_adapt")
        phases = tuple(f"{name}_s" for name in (*phases, "pipeline_setup"))
        assert all(startup[key] >= 0 for key in phases)
        rounding = 0.0005 * (len(phases) + 1)  # each figure is rounded to the millisecond
        assert startup["pipeline_build_s"] + rounding >= sum(startup[key] for key in phases)
        assert startup["first_sample_first_block_s"] == report["first_block_s"][0]
        assert startup["compiled_graphs"] > 0 and startup["compile_s"] >= startup["compile_backend_s"] > 0
        assert startup["compile_dynamo_s"] == pytest.approx(
            startup["compile_s"] - startup["compile_backend_s"], abs=0.002
        )
    assert "startup: generator: random weights" in caplog.text and "startup: compile" in caplog.text
    assert sorted(p.name for p in out.glob("*.mp4")) == ["rank0-0-0_regular.mp4", "rank0-1-1_regular.mp4"]
