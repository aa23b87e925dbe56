"""A Triton flash-attention forward against cuDNN's SDPA at the generator's steady self-attention shape.

The measurement behind BENCHMARKS.md's "Triton attention, measured and left" (2026-11-24, fourth session):
could a kernel of our own beat cuDNN here? Needs a CUDA GPU and Triton (PyTorch's CUDA builds carry it):

    python scripts/experiments/triton_attention_probe.py [--queries 4680] [--keys 18720] [--heads 12]

Two forms of one online-softmax kernel (a query tile per program, over key tiles in order, exp2 with the
scale folded in, a masked last tile): loads through pointers, and loads through TMA tensor descriptors.
Each runs over a grid of tile sizes, warps, pipeline stages and Triton's warp specialisation; the
script prints each one's median time (`triton.testing.do_bench`), its relative error against float32
SDPA, and rechecks the fastest against cuDNN three times, interleaved.
"""

from __future__ import annotations

import argparse
import itertools
import math

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch.nn.attention import SDPBackend, sdpa_kernel
from triton.tools.tensor_descriptor import TensorDescriptor

LOG2E = 1.4426950408889634


@triton.jit
def _online_softmax_step(q, k, v, m_i, l_i, acc, qk_scale, cols, num_keys, MASKED: tl.constexpr):
    """One key tile: scores, running max and sum, rescaled accumulator."""
    qk = tl.dot(q, tl.trans(k)) * qk_scale
    if MASKED:
        qk = tl.where(cols[None, :] < num_keys, qk, -float("inf"))
    m_new = tl.maximum(m_i, tl.max(qk, 1))
    p = tl.math.exp2(qk - m_new[:, None])
    alpha = tl.math.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
    return m_new, l_i, acc


@triton.jit
def attention_pointers(
    Q, K, V, Out, qk_scale,
    sqb, sqn, sqh, skb, skn, skh, svb, svn, svh, sob, son, soh,
    H, num_queries, num_keys,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, WARP_SPECIALIZE: tl.constexpr,
):  # fmt: skip
    """[B, N, H, D] queries over [B, M, H, D] keys/values (any strides, last dim contiguous)."""
    pid_m, pid_bh = tl.program_id(0), tl.program_id(1)
    b, h = pid_bh // H, pid_bh % H
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, HEAD_DIM)
    tile = tl.arange(0, BLOCK_N)
    q = tl.load(Q + b * sqb + h * sqh + rows[:, None] * sqn + dims[None, :], mask=rows[:, None] < num_queries)
    k_base, v_base = K + b * skb + h * skh, V + b * svb + h * svh
    m_i = tl.full([BLOCK_M], -float("inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    full = (num_keys // BLOCK_N) * BLOCK_N
    for start in tl.range(0, full, BLOCK_N, warp_specialize=WARP_SPECIALIZE):
        cols = start + tile
        k = tl.load(k_base + cols[:, None] * skn + dims[None, :])
        v = tl.load(v_base + cols[:, None] * svn + dims[None, :])
        m_i, l_i, acc = _online_softmax_step(q, k, v, m_i, l_i, acc, qk_scale, cols, num_keys, False)
    if full < num_keys:
        cols = full + tile
        k = tl.load(k_base + cols[:, None] * skn + dims[None, :], mask=cols[:, None] < num_keys, other=0.0)
        v = tl.load(v_base + cols[:, None] * svn + dims[None, :], mask=cols[:, None] < num_keys, other=0.0)
        m_i, l_i, acc = _online_softmax_step(q, k, v, m_i, l_i, acc, qk_scale, cols, num_keys, True)
    out = (acc / l_i[:, None]).to(Out.dtype.element_ty)
    tl.store(Out + b * sob + h * soh + rows[:, None] * son + dims[None, :], out, mask=rows[:, None] < num_queries)


@triton.jit
def attention_descriptors(
    q_desc, k_desc, v_desc, Out, qk_scale, sob, son, soh, H, num_queries, num_keys, key_rows,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, WARP_SPECIALIZE: tl.constexpr,
):  # fmt: skip
    """The same through TMA: descriptors over [B*N, H*D] queries and [B*key_rows, H*D] keys/values."""
    pid_m, pid_bh = tl.program_id(0), tl.program_id(1)
    b, h = pid_bh // H, pid_bh % H
    q = q_desc.load([b * num_queries + pid_m * BLOCK_M, h * HEAD_DIM])
    first_row, col = b * key_rows, h * HEAD_DIM
    tile = tl.arange(0, BLOCK_N)
    m_i = tl.full([BLOCK_M], -float("inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    full = (num_keys // BLOCK_N) * BLOCK_N
    for start in tl.range(0, full, BLOCK_N, warp_specialize=WARP_SPECIALIZE):
        k = k_desc.load([first_row + start, col])
        v = v_desc.load([first_row + start, col])
        m_i, l_i, acc = _online_softmax_step(q, k, v, m_i, l_i, acc, qk_scale, start + tile, num_keys, False)
    if full < num_keys:
        cols = full + tile
        k = k_desc.load([first_row + full, col])
        v = tl.where(cols[:, None] < num_keys, v_desc.load([first_row + full, col]), 0.0)
        m_i, l_i, acc = _online_softmax_step(q, k, v, m_i, l_i, acc, qk_scale, cols, num_keys, True)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, HEAD_DIM)
    out = (acc / l_i[:, None]).to(Out.dtype.element_ty)
    tl.store(Out + b * sob + h * soh + rows[:, None] * son + dims[None, :], out, mask=rows[:, None] < num_queries)


def run_pointers(q, k, v, config):
    block_m, block_n, warps, stages, specialize = config
    batch, queries, heads, dim = q.shape
    out = torch.empty_like(q)
    grid = (triton.cdiv(queries, block_m), batch * heads)
    attention_pointers[grid](
        q, k, v, out, dim**-0.5 * LOG2E, *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *out.stride()[:3],
        heads, queries, k.shape[1],
        HEAD_DIM=dim, BLOCK_M=block_m, BLOCK_N=block_n, WARP_SPECIALIZE=specialize, num_warps=warps, num_stages=stages,
    )  # fmt: skip
    return out


def run_descriptors(q, key_buffer, value_buffer, num_keys, config):
    """`key_buffer`/`value_buffer` [B, R, H, D] contiguous (a KV cache); the first `num_keys` rows are attended."""
    block_m, block_n, warps, stages, specialize = config
    batch, queries, heads, dim = q.shape
    out = torch.empty_like(q)
    flat = [t.reshape(-1, heads * dim) for t in (q, key_buffer, value_buffer)]
    blocks = ([block_m, dim], [block_n, dim], [block_n, dim])
    descriptors = [TensorDescriptor(t, list(t.shape), list(t.stride()), b) for t, b in zip(flat, blocks, strict=True)]
    q_desc, k_desc, v_desc = descriptors
    grid = (triton.cdiv(queries, block_m), batch * heads)
    attention_descriptors[grid](
        q_desc, k_desc, v_desc, out, dim**-0.5 * LOG2E, *out.stride()[:3],
        heads, queries, num_keys, key_buffer.shape[1],
        HEAD_DIM=dim, BLOCK_M=block_m, BLOCK_N=block_n, WARP_SPECIALIZE=specialize, num_warps=warps, num_stages=stages,
    )  # fmt: skip
    return out


def sdpa(q, k, v):
    """[B, N, H, D] in and out, as the model calls it (transposed views)."""
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


def cudnn_sdpa(q, k, v):
    """The baseline, on cuDNN's backend by name (SDPA's own choice varies between torch versions; at this
    shape on torch 2.11 it was cuDNN's too, 1.02 ms, against the issue's 1.71 for the flash backend)."""
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        return sdpa(q, k, v)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.float() - expected).norm() / expected.norm()).item()


def configs():
    """(BLOCK_M, BLOCK_N, warps, stages, warp specialisation); 64-row tiles with 8 warps leave warps idle."""
    for config in itertools.product((128, 64), (64, 128), (4, 8), (2, 3, 4), (False, True)):
        if not (config[0] == 64 and config[2] == 8):
            yield config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=4680, help="a 3-frame block of 60x104 latents, 2x2 patches")
    parser.add_argument("--keys", type=int, default=18720, help="the 12-frame window")
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head-dim", type=int, default=128)
    args = parser.parse_args()

    torch.manual_seed(0)
    shape = (1, args.queries, args.heads, args.head_dim)
    q = torch.randn(shape, device="cuda", dtype=torch.bfloat16)
    key_buffer = torch.randn(1, args.keys, args.heads, args.head_dim, device="cuda", dtype=torch.bfloat16)
    value_buffer = torch.randn_like(key_buffer)
    k, v = key_buffer[:, : args.keys], value_buffer[:, : args.keys]
    reference = sdpa(q.float(), k.float(), v.float())
    flops = 4 * math.prod(shape) * args.keys

    def report(label: str, ms: float, error: float) -> None:
        print(f"{label}: {ms:.4f} ms, {flops / ms / 1e9:.0f} TFLOP/s, relative error {error:.2e}", flush=True)

    def bench(fn) -> float:
        return triton.testing.do_bench(fn, warmup=100, rep=500, return_mode="median")

    report("cuDNN SDPA", bench(lambda: cudnn_sdpa(q, k, v)), relative_error(cudnn_sdpa(q, k, v), reference))
    results = []
    for form, config in itertools.product(("pointers", "descriptors"), configs()):
        if form == "pointers":
            fn = lambda config=config: run_pointers(q, k, v, config)  # noqa: E731
        else:
            fn = lambda config=config: run_descriptors(q, key_buffer, value_buffer, args.keys, config)  # noqa: E731
        try:
            error = relative_error(fn(), reference)
        except triton.runtime.errors.OutOfResources as err:
            print(f"{form} {config}: {err}", flush=True)
            continue
        ms = bench(fn)
        results.append((ms, form, config, fn))
        report(f"{form} {config}", ms, error)
    ms, form, config, fastest = min(results, key=lambda r: r[0])
    print(f"fastest: {form} {config}, {ms:.4f} ms")
    for _ in range(3):
        print(f"recheck: cuDNN {bench(lambda: cudnn_sdpa(q, k, v)):.4f} ms, Triton {bench(fastest):.4f} ms", flush=True)


if __name__ == "__main__":
    main()
