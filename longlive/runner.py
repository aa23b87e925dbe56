"""CUDA-graph replay of the generator's passes (the `cuda_graphs` switch).

A pass launches thousands of small kernels; at the published size the CPU takes longer to issue them
than the GPU takes to run them. Here each block shape is captured once as a CUDA graph and replayed:
the bookkeeping (cache slots, RoPE tables: absolute, or window-relative for the queries and the visible
keys) is the loop's, done once per block before its passes, and its results are copied into the graph's
fixed input buffers when a replay follows a new block (not on each of the block's passes). The KV cache
is already a fixed buffer, written in place by the graph. One graph per (batch, frames, visible cache
length): a handful per video. Graphs belong to the cache object they were captured on (`GraphTable`),
never to an address a freed cache had.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from longlive.attention import RotaryTable, WindowRotary
from longlive.kv_cache import CrossAttentionCache, KVCache
from longlive.model import CausalWanModel
from longlive.startup import PHASES


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    latents: torch.Tensor
    timesteps: torch.Tensor
    rope: RotaryTable | WindowRotary
    token_index: torch.Tensor
    output: torch.Tensor
    # The rope table and token index the buffers were copied from (held, so an identity test is safe).
    block_inputs: tuple[RotaryTable | WindowRotary, torch.Tensor] | None = None


class GraphTable:
    """The captured graphs of one KV cache, by key (block shape, visible cache length).

    A graph writes into the cache buffers it was captured with. The table holds that cache (a strong
    reference), so its memory cannot be freed and handed to another cache while a graph may replay into
    it; a different cache object (even one at the same address, `id`) drops the old graphs and the
    reference, and its own graphs are captured anew.
    """

    def __init__(self) -> None:
        self.kv_cache: KVCache | None = None
        self._graphs: dict[tuple, Any] = {}

    def get(self, kv_cache: KVCache, key: tuple) -> Any | None:
        """The graph captured for `key` on this very cache object, or None."""
        if kv_cache is not self.kv_cache:
            self._graphs.clear()
            self.kv_cache = kv_cache
        return self._graphs.get(key)

    def put(self, kv_cache: KVCache, key: tuple, graph: Any) -> None:
        if kv_cache is not self.kv_cache:
            raise RuntimeError("GraphTable.put: call get() with this cache first (the table holds one cache)")
        self._graphs[key] = graph

    def __len__(self) -> int:
        return len(self._graphs)


class CUDAGraphGenerator:
    """Called like `eager_pass` (a block begun in the cache, its rope table); replays a graph per block shape."""

    def __init__(self, model: CausalWanModel, warmup_runs: int = 2) -> None:
        self.model = model
        self.warmup_runs = warmup_runs
        self._graphs = GraphTable()
        self._pool = torch.cuda.graph_pool_handle()
        self._text: CrossAttentionCache | None = None  # fixed buffers every graph reads the prompt from
        self._text_source: CrossAttentionCache | None = None

    def __call__(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        text: CrossAttentionCache,
        rope: RotaryTable | WindowRotary,
        kv_cache: KVCache,
    ) -> torch.Tensor:
        if kv_cache.mask is not None:  # a pass over several blocks (a recache) is rare: run it eagerly
            return eager_pass(self.model, latents, timesteps, text, rope, kv_cache)
        self._load_text(text)
        key = (tuple(latents.shape), kv_cache.visible_tokens)
        entry = self._graphs.get(kv_cache, key)
        if entry is None:
            entry = self._capture(latents, timesteps, rope, kv_cache)
            self._graphs.put(kv_cache, key, entry)
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
    def _copy_inputs(entry: _Graph, latents, timesteps, rope: RotaryTable | WindowRotary, kv_cache: KVCache) -> None:
        entry.latents.copy_(latents)
        entry.timesteps.copy_(timesteps)
        sources = entry.block_inputs
        if sources is None or sources[0] is not rope or sources[1] is not kv_cache.token_index:  # a new block
            entry.rope.copy_(rope)  # both tables under window-relative RoPE; the key table's length is in the key
            entry.token_index.copy_(kv_cache.token_index)
            entry.block_inputs = (rope, kv_cache.token_index)

    def _run(self, entry: _Graph, kv_cache: KVCache) -> torch.Tensor:
        layers = kv_cache.layers(token_index=entry.token_index)
        return self.model.run_blocks(entry.latents, entry.timesteps, self._text, entry.rope, layers)

    def _capture(self, latents, timesteps, rope: RotaryTable | WindowRotary, kv_cache: KVCache) -> _Graph:
        entry = _Graph(
            graph=torch.cuda.CUDAGraph(),
            latents=latents.clone(),
            timesteps=timesteps.clone(),
            rope=rope.clone(),
            token_index=kv_cache.token_index.clone(),
            output=torch.empty(0),
            block_inputs=(rope, kv_cache.token_index),
        )
        # Warm up on a side stream (lazy initialisation, autotuning, compilation), as capture requires.
        # These runs write the block's own cache slots with its real inputs, so they leave nothing stale.
        # Timed apart (`startup.PHASES`): the first warm-up of a shape compiles, when compile_generator is on.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with PHASES.phase("CUDA graphs: warm-up", latents.device, log=False), torch.cuda.stream(side):
            for _ in range(self.warmup_runs):
                self._run(entry, kv_cache)
        torch.cuda.current_stream().wait_stream(side)
        with PHASES.phase("CUDA graphs: capture", latents.device, log=False):
            with torch.cuda.graph(entry.graph, pool=self._pool):
                entry.output = self._run(entry, kv_cache)
        return entry


def eager_pass(
    model: CausalWanModel,
    latents: torch.Tensor,
    timesteps: torch.Tensor,
    text: CrossAttentionCache,
    rope: RotaryTable | WindowRotary,
    kv_cache: KVCache,
) -> torch.Tensor:
    """One generator pass of a block already begun in `kv_cache`, with its rope table (the reference path)."""
    return model.run_blocks(latents, timesteps, text, rope, kv_cache.layers())
