"""cuDNN's FP8 attention against its bf16 attention at the generator's steady self-attention shape.

The measurement behind BENCHMARKS.md's "FP8 attention (cuDNN), measured and left" (2026-11-24): needs a
CUDA GPU and `nvidia-cudnn-frontend` (its Python graph API; not a dependency of longlive):

    python scripts/experiments/fp8_attention_probe.py [--heads 12] [--head-dim 128] [--queries 4680]

Times bf16 SDPA (cuDNN backend) and cuDNN's FP8 SDPA (per-tensor scales; on Hopper it writes FP8 output,
dequantized here) on [B, N, H, D] tensors, the per-tensor quantization of q, k and v (eager and compiled),
and each output's error against float32 SDPA; then captures the FP8 call in a CUDA graph.
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from longlive.benchmark import cuda_milliseconds

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max


def sdpa_bshd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """SDPA on [B, N, H, D] tensors (the layout the generator keeps)."""
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


def quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x -> (float8 x * scale, 1/scale as a [1] float32 tensor), one scale for the whole tensor."""
    scale = FP8_MAX / x.abs().amax().float().clamp(min=1e-12)
    return (x * scale.to(x.dtype)).to(FP8), (1 / scale).reshape(1)


class CudnnFp8Attention:
    """One cuDNN FP8 SDPA graph for [B, N, H, D] queries over [B, M, H, D] keys and values."""

    def __init__(self, cudnn, handle, batch: int, heads: int, head_dim: int, queries: int, keys: int) -> None:
        self.cudnn, self.handle = cudnn, handle
        types = cudnn.data_type
        graph = cudnn.pygraph(
            io_data_type=types.FP8_E4M3,
            intermediate_data_type=types.FLOAT,
            compute_data_type=types.FLOAT,
            handle=handle,
        )

        def tokens(name: str, length: int):
            dims, strides = [batch, heads, length, head_dim], [length * heads * head_dim, head_dim, heads * head_dim, 1]
            return graph.tensor(name=name, dim=dims, stride=strides, data_type=types.FP8_E4M3)

        def scalar(name: str):
            return graph.tensor(name=name, dim=[1, 1, 1, 1], stride=[1, 1, 1, 1], data_type=types.FLOAT)

        self.q, self.k, self.v = tokens("q", queries), tokens("k", keys), tokens("v", keys)
        names = ("descale_q", "descale_k", "descale_v", "descale_s", "scale_s", "scale_o")
        self.scalars = dict(zip(names, (scalar(name) for name in names), strict=True))
        out, _, amax_s, amax_o = graph.sdpa_fp8(
            q=self.q,
            k=self.k,
            v=self.v,
            **self.scalars,
            generate_stats=False,
            attn_scale=1 / math.sqrt(head_dim),
            use_causal_mask=False,
        )
        out_strides = [queries * heads * head_dim, head_dim, heads * head_dim, 1]
        out.set_output(True).set_dim([batch, heads, queries, head_dim]).set_stride(out_strides)
        out.set_data_type(types.FP8_E4M3)  # Hopper: FP8 output only (bf16 output is Blackwell-only)
        for amax in (amax_s, amax_o):
            amax.set_output(True).set_dim([1, 1, 1, 1]).set_stride([1, 1, 1, 1]).set_data_type(types.FLOAT)
        self.out, self.amax_s, self.amax_o = out, amax_s, amax_o
        graph.validate()
        graph.build_operation_graph()
        graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
        graph.check_support()
        graph.build_plans()
        self.graph = graph
        self.workspace = torch.empty(graph.get_workspace_size(), device="cuda", dtype=torch.uint8)
        self.amax = torch.zeros(2, device="cuda")
        self.softmax_scales = (torch.full((1,), 1 / FP8_MAX, device="cuda"), torch.full((1,), FP8_MAX, device="cuda"))

    def __call__(self, q8, k8, v8, descale_q, descale_k, descale_v, out8: torch.Tensor) -> torch.Tensor:
        """The attention of float8 inputs, returned in bf16. The output is scaled by 1/descale_v (its values
        are convex combinations of v's, so they cannot overflow) and dequantized after."""
        self.cudnn.set_stream(self.handle, torch.cuda.current_stream().cuda_stream)
        descale_s, scale_s = self.softmax_scales
        pack = {
            self.q: q8,
            self.k: k8,
            self.v: v8,
            self.scalars["descale_q"]: descale_q,
            self.scalars["descale_k"]: descale_k,
            self.scalars["descale_v"]: descale_v,
            self.scalars["descale_s"]: descale_s,
            self.scalars["scale_s"]: scale_s,
            self.scalars["scale_o"]: 1 / descale_v,
            self.out: out8,
            self.amax_s: self.amax[0:1],
            self.amax_o: self.amax[1:2],
        }
        self.graph.execute(pack, self.workspace, handle=self.handle)
        return out8.to(torch.bfloat16) * descale_v.to(torch.bfloat16)


def relative_error(got: torch.Tensor, reference: torch.Tensor) -> float:
    return ((got.float() - reference).norm() / reference.norm()).item()


def probe(cudnn, handle, heads: int, head_dim: int, queries: int, keys: int) -> str:
    """One line of timings and errors at one shape."""
    q = torch.randn(1, queries, heads, head_dim, device="cuda", dtype=torch.bfloat16) * 2
    k = torch.randn(1, keys, heads, head_dim, device="cuda", dtype=torch.bfloat16) * 2
    v = torch.randn(1, keys, heads, head_dim, device="cuda", dtype=torch.bfloat16)
    reference = sdpa_bshd(q.float(), k.float(), v.float())
    flops = 4 * queries * keys * head_dim * heads
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        bf16_ms = cuda_milliseconds(lambda: sdpa_bshd(q, k, v))
        bf16_error = relative_error(sdpa_bshd(q, k, v), reference)
    attention = CudnnFp8Attention(cudnn, handle, 1, heads, head_dim, queries, keys)
    (q8, dq), (k8, dk), (v8, dv) = quantize(q), quantize(k), quantize(v)
    out8 = torch.empty(1, queries, heads, head_dim, device="cuda", dtype=FP8)
    fp8_error = relative_error(attention(q8, k8, v8, dq, dk, dv, out8), reference)
    fp8_ms = cuda_milliseconds(lambda: attention(q8, k8, v8, dq, dk, dv, out8))
    quantize_all = torch.compile(lambda a, b, c: (quantize(a), quantize(b), quantize(c)))
    eager_quant_ms = cuda_milliseconds(lambda: (quantize(q), quantize(k), quantize(v)))
    compiled_quant_ms = cuda_milliseconds(lambda: quantize_all(q, k, v))
    graph, side = torch.cuda.CUDAGraph(), torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        attention(q8, k8, v8, dq, dk, dv, out8)
    torch.cuda.current_stream().wait_stream(side)
    with torch.cuda.graph(graph):
        graphed = attention(q8, k8, v8, dq, dk, dv, out8)
    graphed.zero_()
    graph.replay()
    return (
        f"keys {keys}: bf16 cuDNN {bf16_ms:.3f} ms ({flops / bf16_ms / 1e9:.0f} TFLOP/s, "
        f"rel err {bf16_error:.2e}); fp8 cuDNN + dequantize {fp8_ms:.3f} ms ({flops / fp8_ms / 1e9:.0f} "
        f"TFLOP/s, rel err {fp8_error:.3f}); quantize q,k,v {eager_quant_ms:.3f} ms eager, "
        f"{compiled_quant_ms:.3f} compiled; graph replay rel err {relative_error(graphed, reference):.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=4680, help="tokens of one block (3 frames of 1560)")
    parser.add_argument("--keys", type=int, nargs="+", default=[18720, 9360], help="visible tokens (12, 6 frames)")
    args = parser.parse_args()
    import cudnn

    print("cudnn frontend", cudnn.__version__, "backend", cudnn.backend_version(), flush=True)
    handle = cudnn.create_handle()
    torch.manual_seed(0)
    for keys in args.keys:
        print(probe(cudnn, handle, args.heads, args.head_dim, args.queries, keys), flush=True)


if __name__ == "__main__":
    main()
