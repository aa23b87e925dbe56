"""CUDA-graph replay of the generator's passes (the `cuda_graphs` switch).

A pass launches thousands of small kernels; at the published size the CPU takes longer to issue them
than the GPU takes to run them. Here each block shape is captured once as a CUDA graph and replayed:
the bookkeeping (cache slots, RoPE table) is the loop's, done once per block before its passes, and
its results are copied into the graph's fixed input buffers when a replay follows a new block (not on
each of the block's passes). The KV cache is already a fixed buffer, written in place by the graph.
One graph per (batch, frames, visible cache length): a handful per video.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from longlive.attention import RotaryTable
from longlive.kv_cache import CrossAttentionCache, KVCache
from longlive.model import CausalWanModel


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    latents: torch.Tensor
    timesteps: torch.Tensor
    rope: RotaryTable
    token_index: torch.Tensor
    output: torch.Tensor
    # The rope table and token index the buffers were copied from (held, so an identity test is safe).
    block_inputs: tuple[RotaryTable, torch.Tensor] | None = None


class CUDAGraphGenerator:
    """Called like `eager_pass` (a block begun in the cache, its rope table); replays a graph per block shape."""

    def __init__(self, model: CausalWanModel, warmup_runs: int = 2) -> None:
        self.model = model
        self.warmup_runs = warmup_runs
        self._graphs: dict[tuple, _Graph] = {}
        self._pool = torch.cuda.graph_pool_handle()
        self._text: CrossAttentionCache | None = None  # fixed buffers every graph reads the prompt from
        self._text_source: CrossAttentionCache | None = None

    def __call__(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        text: CrossAttentionCache,
        rope: RotaryTable,
        kv_cache: KVCache,
    ) -> torch.Tensor:
        if kv_cache.mask is not None:  # a pass over several blocks (a recache) is rare: run it eagerly
            return eager_pass(self.model, latents, timesteps, text, rope, kv_cache)
        self._load_text(text)
        key = (tuple(latents.shape), kv_cache.visible_tokens, id(kv_cache))
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._capture(latents, timesteps, rope, kv_cache)
            self._graphs[key] = entry
        else:
            self._copy_inputs(entry, latents, timesteps, rope, kv_cache)
        entry.graph.replay()
        return entry.output.clone()

    def _load_text(self, text: CrossAttentionCache) -> None:
        """Copy a new prompt's K/V into the fixed text buffers (once per prompt, not per pass)."""
        if text is self._text_source:
            return
        if self._text is None:
            self._text = CrossAttentionCache([k.clone() for k in text.keys], [v.clone() for v in text.values])
        else:
            for mine, theirs in zip(self._text.keys + self._text.values, text.keys + text.values, strict=True):
                mine.copy_(theirs)
        self._text_source = text

    @staticmethod
    def _copy_inputs(entry: _Graph, latents, timesteps, rope: RotaryTable, kv_cache: KVCache) -> None:
        entry.latents.copy_(latents)
        entry.timesteps.copy_(timesteps)
        sources = entry.block_inputs
        if sources is None or sources[0] is not rope or sources[1] is not kv_cache.token_index:  # a new block
            block_inputs = (rope, kv_cache.token_index)
            entry.rope.cos.copy_(rope.cos)
            entry.rope.sin.copy_(rope.sin)
            entry.token_index.copy_(kv_cache.token_index)
            entry.block_inputs = block_inputs

    def _run(self, entry: _Graph, kv_cache: KVCache) -> torch.Tensor:
        layers = kv_cache.layers(token_index=entry.token_index)
        return self.model.run_blocks(entry.latents, entry.timesteps, self._text, entry.rope, layers)

    def _capture(self, latents, timesteps, rope: RotaryTable, kv_cache: KVCache) -> _Graph:
        entry = _Graph(
            graph=torch.cuda.CUDAGraph(),
            latents=latents.clone(),
            timesteps=timesteps.clone(),
            rope=RotaryTable.from_tables(rope.cos.clone(), rope.sin.clone()),
            token_index=kv_cache.token_index.clone(),
            output=torch.empty(0),
            block_inputs=(rope, kv_cache.token_index),
        )
        # Warm up on a side stream (lazy initialisation, autotuning, compilation), as capture requires.
        # These runs write the block's own cache slots with its real inputs, so they leave nothing stale.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup_runs):
                self._run(entry, kv_cache)
        torch.cuda.current_stream().wait_stream(side)
        with torch.cuda.graph(entry.graph, pool=self._pool):
            entry.output = self._run(entry, kv_cache)
        return entry


def eager_pass(
    model: CausalWanModel,
    latents: torch.Tensor,
    timesteps: torch.Tensor,
    text: CrossAttentionCache,
    rope: RotaryTable,
    kv_cache: KVCache,
) -> torch.Tensor:
    """One generator pass of a block already begun in `kv_cache`, with its rope table (the reference path)."""
    return model.run_blocks(latents, timesteps, text, rope, kv_cache.layers())
