"""Where one transformer block's time goes, compiled and replayed as a CUDA graph, under variants.

The measurement behind BENCHMARKS.md's kernel figures for the RoPE rewrite and `fuse_ffn_gelu`
(2026-11-24). Needs a CUDA GPU:

    python scripts/experiments/block_kernels.py [--variants stacked-rope rope gelu ...] [--rows 12]

One block of the published generator (bf16, random weights) at the steady shape: a 3-frame block over a
full 12-frame window. Variants:
  stacked-rope  RoPE in the earlier split-rotate-stack form (what the compiler turned into one slow kernel)
  rope          RoPE as it is now (`RotaryTable`)
  gelu          + the FFN's GELU in its first product's epilogue (`fuse_ffn_gelu`)
  gelu-cdt      + inductor's coordinate-descent tuning of its kernels' block sizes
  gelu-autotune + torch.compile(mode="max-autotune-no-cudagraphs") (Triton GEMM templates as well)
Each prints the block's median time over 5 x 20 replays, its output's relative error against the
eager block, and the profiler's top kernels.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import time

import torch
from torch.profiler import ProfilerActivity, profile

from longlive.attention import RotaryTable
from longlive.ffn import fuse_ffn_gelu
from longlive.kv_cache import KVCache
from longlive.model import CausalWanModel, init_random_weights
from longlive.presets import PRESETS

FRAMES, CACHE_FRAMES, SINK_FRAMES, LATENT_HW = 3, 12, 3, (60, 104)


def stacked_rotation(table: RotaryTable, x: torch.Tensor) -> torch.Tensor:
    """The earlier form of `RotaryTable.apply`: split each pair, rotate, stack back (same result)."""
    cos, sin = table.cos[..., 0::2], table.sin[..., 1::2]  # undo the full-width tables
    pairs = x.float().unflatten(-1, (-1, 2))
    real, imag = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack((real * cos - imag * sin, real * sin + imag * cos), dim=-1)
    return rotated.flatten(-2).type_as(x)


VARIANTS = {
    "stacked-rope": {"stacked": True},
    "rope": {},
    "gelu": {"gelu": True},
    "gelu-cdt": {"gelu": True, "options": {"coordinate_descent_tuning": True}},
    "gelu-autotune": {"gelu": True, "mode": "max-autotune-no-cudagraphs"},
}


class BlockBench:
    """One published-size block with its inputs and a full KV cache, on the GPU."""

    def __init__(self) -> None:
        arch = dataclasses.replace(PRESETS["Wan2.1-T2V-1.3B"].generator, num_layers=1)
        torch.manual_seed(0)
        model = CausalWanModel(arch)
        init_random_weights(model)
        self.model = model.to("cuda", torch.bfloat16).eval()
        shape = torch.Size([1, FRAMES, arch.in_channels, *LATENT_HW])
        start = CACHE_FRAMES - FRAMES
        self.rope = self.model.rotary_table(shape, start, torch.device("cuda"))
        frame_tokens = self.model.token_grid(shape)[1] * self.model.token_grid(shape)[2]
        self.x = torch.randn(1, FRAMES, frame_tokens, arch.dim, device="cuda")
        self.time = torch.randn(1, FRAMES, 6, arch.dim, device="cuda") * 0.1
        text_shape = (1, arch.text_len, arch.num_heads, arch.head_dim)
        self.text_keys = torch.randn(text_shape, device="cuda", dtype=torch.bfloat16)
        self.text_values = torch.randn(text_shape, device="cuda", dtype=torch.bfloat16)
        cache = KVCache(
            num_layers=1,
            batch_size=1,
            frame_tokens=frame_tokens,
            cache_frames=CACHE_FRAMES,
            sink_frames=SINK_FRAMES,
            num_heads=arch.num_heads,
            head_dim=arch.head_dim,
            dtype=torch.bfloat16,
            device="cuda",
        )
        cache.keys.normal_()
        cache.values.normal_()
        for block_start in range(0, CACHE_FRAMES, FRAMES):  # fill the window, then rewrite the last block
            cache.begin_block(block_start, FRAMES)
        cache.begin_block(start, FRAMES)
        self.layer = cache.layer(0)
        self.reference = self.run(self.model.blocks[0]).float()

    @torch.no_grad()
    def run(self, block: torch.nn.Module) -> torch.Tensor:
        return block(self.x, self.time, self.rope, self.text_keys, self.text_values, self.layer, None)

    def variant(self, name: str, rows: int) -> str:
        spec = VARIANTS[name]
        apply = RotaryTable.apply
        if spec.get("stacked"):
            RotaryTable.apply = stacked_rotation
        try:
            block = copy.deepcopy(self.model.blocks[0])
            if spec.get("gelu"):
                fuse_ffn_gelu(torch.nn.ModuleList([block]))
            torch._dynamo.reset()
            block.compile(mode=spec.get("mode"), options=spec.get("options"))
            started = time.perf_counter()
            self.run(block)
            compile_s = time.perf_counter() - started
            graph, output = self.capture(block)
        finally:
            RotaryTable.apply = apply
        error = ((output.float() - self.reference).norm() / self.reference.norm()).item()
        median_ms = self.median_replay_ms(graph)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                graph.replay()
            torch.cuda.synchronize()
        table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=rows, max_name_column_width=90)
        return (
            f"{name}: compile {compile_s:.1f} s, block {median_ms:.4f} ms (median), rel err vs eager {error:.2e}\n"
            f"{table}"
        )

    def capture(self, block: torch.nn.Module) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self.run(block)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            output = self.run(block)
        graph.replay()
        return graph, output

    @staticmethod
    def median_replay_ms(graph: torch.cuda.CUDAGraph) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        for _ in range(5):
            start.record()
            for _ in range(20):
                graph.replay()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 20)
        return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--rows", type=int, default=12, help="kernels listed per variant")
    args = parser.parse_args()
    bench = BlockBench()
    for name in args.variants:
        print(bench.variant(name, args.rows), flush=True)


if __name__ == "__main__":
    main()
