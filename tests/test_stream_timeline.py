"""scripts/experiments/stream_timeline.py: idle gaps from GPU intervals, and what the host was doing then."""

import json

import pytest
from conftest import TINY_CONFIG, script_module

timeline = script_module("scripts/experiments/stream_timeline.py")


def test_idle_gaps_between_overlapping_streams():
    activities = [
        (-50.0, -10.0, "before the window"),
        (10.0, 40.0, "a"),
        (30.0, 60.0, "b"),  # another stream, overlapping a
        (35.0, 45.0, "c"),  # inside b: ends no gap
        (80.0, 90.0, "d"),
        (95.0, 130.0, "e"),  # past the window's end: clipped
    ]
    gaps = timeline.idle_gaps(activities, (0.0, 100.0))
    assert [(g.start, g.end, g.before, g.after) for g in gaps] == [
        (0.0, 10.0, None, "a"),
        (60.0, 80.0, "b", "d"),
        (90.0, 95.0, "d", "e"),
    ]
    busy = timeline.union_length([(max(s, 0.0), min(e, 100.0)) for s, e, _ in activities if e > 0])
    assert sum(g.length for g in gaps) == pytest.approx(100.0 - busy)
    assert timeline.idle_gaps([], (0.0, 5.0)) == [timeline.Gap(0.0, 5.0, None, None)]
    assert timeline.idle_gaps([(20.0, 30.0, "a")], (0.0, 50.0))[-1] == timeline.Gap(30.0, 50.0, "a", None)


def test_gap_histogram_bins_by_length():
    gaps = [timeline.Gap(0.0, length, None, None) for length in (5.0, 19.0, 20.0, 150.0, 2500.0, 1000.0)]
    assert timeline.gap_histogram(gaps) == {
        "<20us": {"count": 2, "ms": 0.02},
        "20-100us": {"count": 1, "ms": 0.02},
        "100-1000us": {"count": 1, "ms": 0.15},
        ">=1000us": {"count": 2, "ms": 3.5},
    }


def test_gap_transitions_by_kind():
    gaps = [
        timeline.Gap(0.0, 10.0, None, "gemm_a"),
        timeline.Gap(20.0, 25.0, "ncclDevKernel_AllToAll", "nvjet_gemm"),
        timeline.Gap(30.0, 37.0, "ncclDevKernel_AllToAll", "cutlass_gemm"),
        timeline.Gap(50.0, 1050.0, "conv_fprop", None),
    ]
    assert timeline.gap_transitions(gaps) == {
        "conv>end": {"count": 1, "ms": 1.0},
        "nccl>gemm": {"count": 2, "ms": 0.01},
        "start>gemm": {"count": 1, "ms": 0.01},
    }
    assert list(timeline.gap_transitions(gaps, top=1)) == ["conv>end"]


def test_ranges_innermost_walks_up_the_nesting():
    ranges = timeline.Ranges([(0, 100, "A"), (10, 20, "B"), (30, 40, "C"), (31, 32, "D")])
    assert ranges.innermost(31.5) == "D"
    assert ranges.innermost(35) == "C"
    assert ranges.innermost(50) == "A"  # D and C ended: their parent
    assert ranges.innermost(31.5, keep=lambda name: name != "D") == "C"
    assert ranges.innermost(150) is None
    assert [name for _, _, name in ranges.open_at(31.5)] == ["A", "C", "D"]


def _event(cat, name, ts, dur, tid=1, **args):
    return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "pid": 0, "tid": tid, "args": args}


def synthetic_trace(with_stack: bool) -> dict:
    """Two blocks over a 1000 us window: a GEMM queued while denoising, then in the decode a blocking copy to
    pageable memory (the host waits in it as the GPU goes idle) and a convolution launched 108 us after."""
    events = [
        _event("user_annotation", timeline.WINDOW, 0, 1000),
        _event("user_annotation", "block 0", 0, 500),
        _event("user_annotation", "denoise", 1, 399),
        _event("cuda_runtime", "cudaLaunchKernel", 2, 2, correlation=1),
        _event("kernel", "gemm_a", 10, 590, tid=7, stream=7, correlation=1),
        _event("user_annotation", "block 1", 500, 500),
        _event("user_annotation", "decode", 520, 470),
        _event("cpu_op", "aten::item", 540, 100),
        _event("cuda_runtime", "cudaMemcpyAsync", 541, 98, correlation=2),
        _event("gpu_memcpy", "Memcpy DtoH (Device -> Pageable)", 600, 2, tid=7, stream=7, correlation=2),
        _event("cpu_op", "aten::conv2d", 700, 20),
        _event("cuda_runtime", "cudaLaunchKernel", 710, 2, correlation=3),
        _event("kernel", "conv_fprop", 715, 185, tid=7, stream=7, correlation=3),
        _event("user_annotation", "gather", 714, 6),
        _event("cuda_runtime", "cudaLaunchKernel", 715, 1, correlation=4),
        _event("kernel", "ncclDevKernel_Gather", 800, 50, tid=8, stream=8, correlation=4),
        _event("cuda_runtime", "cudaEventSynchronize", 650, 200, tid=2),  # a writer thread's wait
    ]
    if with_stack:
        events += [
            _event("python_function", "longlive/pipeline.py(100): decode", 520, 470),
            _event("python_function", "torch/_tensor.py(1): item", 539, 102),
        ]
    return {"traceEvents": events}


@pytest.mark.parametrize("with_stack", [False, True])
def test_summary_attributes_a_gap_to_the_host_sync_it_began_in(with_stack):
    summary = timeline.summarise(synthetic_trace(with_stack), wall_s=0.001, blocks=2, gaps=2)
    assert summary["busy_ms"] == pytest.approx(0.777, abs=0.05)
    gaps = summary["idle_gaps"]
    assert gaps["window_ms"] == 1.0
    assert gaps["histogram"]["<20us"] == {"count": 1, "ms": 0.01}  # the head, before the first kernel
    assert gaps["histogram"]["100-1000us"] == {"count": 2, "ms": 0.21}  # 113 us in the decode, the 100 us tail
    longest = gaps["longest"][0]
    assert longest["us"] == 113.0
    assert (longest["block"], longest["at_us"]) == ("block 1", 102)
    assert (longest["before"], longest["after"]) == ("Memcpy DtoH (Device -> Pageable)", "conv_fprop")
    assert longest["host_labels"] == "block 1/decode"
    assert longest["host_op"] == "cudaMemcpyAsync"
    assert longest["launch_us"] == 108.0 and longest["launch_labels"] == "block 1/decode"
    assert (longest.get("host_python") == "longlive/pipeline.py(100): decode") is with_stack
    assert gaps["longest"][1]["after"] is None  # the tail
    wait = summary["host_waits"]["cudaMemcpyAsync DtoH (Device -> Pageable)"]
    issuer = "longlive/pipeline.py(100): decode" if with_stack else "block 1/decode: aten::item"
    assert wait == {"ms": 0.1, "per_block": 0.5, "by": {issuer: 1}}
    other = {"ms": 0.2, "per_block": 0.5, "by": {"2": 1}}
    assert summary["host_waits"]["cudaEventSynchronize (other threads)"] == other
    assert len(summary["host_waits"]) == 2  # not the launches
    assert summary["host_ops_per_block"]["cudaLaunchKernel"] == {"ms": 0.0, "calls": 1.5}
    labels = summary["labels_ms_per_block"]
    assert labels["denoise"] == {"host": 0.2, "gpu": 0.29, "nccl": 0.0}  # 399 and 590 us over 2 blocks
    assert labels["decode"]["gpu"] == pytest.approx(0.09, abs=0.006)  # the copy and the conv
    assert labels["gather"] == {"host": 0.0, "gpu": 0.0, "nccl": 0.03}


def test_summary_needs_the_window_label():
    with pytest.raises(ValueError, match="timeline window"):
        timeline.summarise({"traceEvents": [_event("kernel", "k", 0, 1)]}, wall_s=0.001)


def test_timeline_runs_on_one_cpu_process(tmp_path, one_thread):
    args = ["--config_path", str(TINY_CONFIG), "--out", str(tmp_path), "--skip", "1", "--blocks", "1"]
    summary = timeline.main([*args, "num_output_frames=6", "num_conditioning_frames=0"])
    assert json.loads((tmp_path / "rank0.json").read_text()) == summary
    assert summary["busy_ms"] == 0.0 and summary["idle_gaps"]["histogram"][">=1000us"]["count"] == 1
    labels = summary["labels_ms_per_block"]
    assert {"denoise", "decode", "cache pass", "begin block"} <= set(labels)  # the pipeline's stages
    assert labels["decode"]["host"] > 0 and summary["host_waits"] == {}
