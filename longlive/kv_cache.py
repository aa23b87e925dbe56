"""The caches the block-causal generator attends through.

`KVCache` owns every self-attention key and value the generator keeps between blocks: one preallocated
tensor, written in place, so memory is constant in video length. `CrossAttentionCache` holds the
per-prompt text keys and values. Attention only calls `KVCache.write`; the pipeline allocates,
resets and starts blocks. The visibility rule lives here too (`frame_visibility_mask`), so the cached
rollout and the full-sequence reference are two readings of one rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from longlive.attention import FramePositions


class CacheInvariantError(RuntimeError):
    """A block was written where the cache cannot hold it (an engine bug, not a user error)."""


class KVCache:
    """Self-attention K/V of the sink frames and a rolling window, for every layer.

    Layout of one layer, in latent frames (each frame is `frame_tokens` consecutive token slots):

        slot    0 .. S-1   |  S .. C-1
                sink       |  rolling window (a ring over the frames after the sinks)

        frame f lives in slot f - s0           if s0 <= f < s0 + S   (the sink frames)
                          S + (f-S) % R        otherwise, with R = C - S

    s0 (`sink_start`) is 0: the sinks hold the first S frames. Only LongLive's recache with
    `global_sink: false` moves them (`start_recache`): the cache is emptied and the first S frames of
    the rerun become the sinks, e.g. C=6, S=2, a switch at frame 9 reruns frames 3..8:

        before   slot  0  1 | 2  3  4  5        after   slot  0  1 | 2  3  4  5
                 frame 0  1 | 6  7  8  5                frame 3  4 | 6  7  8  5
                                                        (s0 = 3; frame 5 now in the ring, 3 and 4 sinks)

    A block of frames [s, e) sees the sink plus the latest R frames ending at e (itself included),
    which are exactly the slots holding frames: before the ring wraps they are the prefix [0, e),
    afterwards the whole buffer. Writing frame f overwrites frame f-R, the one that just left the
    window, so nothing moves; repeated passes over a block (denoising steps, the context pass)
    overwrite its slots. Keys are stored after RoPE, so their order in the buffer does not matter.

    A pass may rewrite more frames than the window holds when some of them are sinks (LongLive's
    recache of [0, e) with e <= C); every frame of a single-block pass sees every other one. A pass may
    also be split into blocks (`begin_block(..., block_sizes=[...])`, our `recache_mode: window`):
    every layer view then carries a token mask [N, M] in slot order, built from the rule of
    `frame_visibility_mask`, so each block of the pass still sees only its own past. Such a pass
    must not evict a frame one of its blocks should see (the cache checks it).

    With `window_rope` (`model_kwargs.use_infinite_attention`, LongLive's Infinity-RoPE) keys are stored
    without RoPE, and each pass says at which time position attention should rotate every visible
    key and query (`frame_positions`): a frame's slot in LongLive's buffer, which holds the sinks, then
    the window in video order, then the current block. For a block ending at frame e, with
    shift = max(0, e - C) frames dropped from the window so far:

        sink frame f       -> f - s0        (0 .. S-1, whatever the block)
        any other frame f  -> f - shift     (the block itself ends at C - 1 once the window is full)

    e.g. C=6, S=2, blocks of 2: block [6, 8) has shift 2 and sees   frame 0 1 | 4 5 | 6 7
                                                                    position 0 1 | 2 3 | 4 5
    where absolute RoPE gives 0 1 4 5 6 7. Until the window is full (e <= C) both are the frame index.
    In a pass of several blocks each block has its own shift, so the keys are rotated per block.
    """

    def __init__(
        self,
        *,
        num_layers: int,
        batch_size: int,
        frame_tokens: int,
        cache_frames: int,
        sink_frames: int,
        num_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device | str,
        window_rope: bool = False,
    ) -> None:
        if not 0 <= sink_frames < cache_frames:
            raise CacheInvariantError(f"sink_frames={sink_frames} must lie in [0, cache_frames={cache_frames})")
        self.frame_tokens = frame_tokens
        self.cache_frames = cache_frames
        self.sink_frames = sink_frames
        self.window_rope = window_rope  # keys stored unrotated; `frame_positions` says where to rotate them
        shape = (num_layers, batch_size, cache_frames * frame_tokens, num_heads, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)  # [L, B, C*T, H, D]
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.reset()

    # -- bookkeeping -----------------------------------------------------------------------------

    @property
    def window_frames(self) -> int:
        return self.cache_frames - self.sink_frames

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.values.nbytes

    def reset(self) -> None:
        """Forget every frame (the buffers are kept and overwritten later)."""
        self.end_frame = 0  # one past the latest frame written
        self.sink_start = 0  # the sink slots hold frames [sink_start, sink_start + S)
        self.slot_frames: list[int] = [-1] * self.cache_frames  # frame held by each slot, -1 if empty
        self._token_index: torch.Tensor | None = None
        self._visible_tokens = 0
        self._mask: torch.Tensor | None = None
        self._positions: FramePositions | None = None

    def is_sink(self, frame: int) -> bool:
        return self.sink_start <= frame < self.sink_start + self.sink_frames

    def slot_of(self, frame: int) -> int:
        if self.is_sink(frame):
            return frame - self.sink_start
        return self.sink_frames + (frame - self.sink_frames) % self.window_frames

    def begin_block(self, start_frame: int, num_frames: int, block_sizes: Sequence[int] | None = None) -> None:
        """Reserve the slots of frames [start_frame, start_frame + num_frames) for the next writes.

        The pass either extends the cached frames or rewrites the latest ones (a later denoising
        pass, or a recache); anything else would let a query see its future. Within one block every
        frame sees every other (no mask, as LongLive's cached attention). `block_sizes` splits the
        pass into blocks (summing to `num_frames`); with more than one, each layer view carries the
        block-causal token mask (`LayerKV.mask`).
        """
        end = start_frame + num_frames
        ring = [f for f in range(start_frame, end) if not self.is_sink(f)]  # frames the pass puts in the ring
        if num_frames < 1 or len(ring) > self.window_frames or start_frame < self.sink_start:
            raise CacheInvariantError(
                f"block of {num_frames} frames [{start_frame}, {end}) does not fit the cache: {len(ring)} of them "
                f"outside the sink frames [{self.sink_start}, {self.sink_start + self.sink_frames}) for a rolling "
                f"window of {self.window_frames} frames (cache {self.cache_frames}, sink {self.sink_frames})"
            )
        if not start_frame <= self.end_frame <= end:
            raise CacheInvariantError(
                f"block [{start_frame}, {end}) must extend or rewrite the cached frames [0, {self.end_frame}); "
                f"slots hold frames {self.slot_frames}"
            )
        sizes = [num_frames] if block_sizes is None else list(block_sizes)
        if sum(sizes) != num_frames or min(sizes) < 1:
            raise CacheInvariantError(
                f"block_sizes {sizes} do not split the pass of {num_frames} frames [{start_frame}, {end})"
            )
        slots = [self.slot_of(f) for f in range(start_frame, end)]
        held = [self.slot_frames[slot] for slot in slots]
        evicted = [frame for frame in held if frame >= 0 and not start_frame <= frame < end]
        first_end = start_frame + sizes[0]
        needed = [frame for frame in evicted if frame >= first_end - self.window_frames]
        if len(sizes) > 1 and needed:
            raise CacheInvariantError(
                f"pass [{start_frame}, {end}) in blocks {sizes} evicts frames {needed}, which its first block "
                f"[{start_frame}, {first_end}) must see (window {self.window_frames}); slots hold {self.slot_frames}"
            )
        for frame, slot in zip(range(start_frame, end), slots, strict=True):
            self.slot_frames[slot] = frame
        self.end_frame = end
        # Built on the device: a host-to-device copy would make every pass wait for the previous one.
        device, size = self.keys.device, self.frame_tokens
        self._token_index = torch.cat([torch.arange(slot * size, (slot + 1) * size, device=device) for slot in slots])
        self._visible_tokens = min(end, self.cache_frames) * self.frame_tokens
        self._mask = None if len(sizes) == 1 else self._pass_mask(start_frame, sizes)
        self._positions = self._window_positions(start_frame, sizes) if self.window_rope else None

    def _window_positions(self, start_frame: int, block_sizes: Sequence[int]) -> FramePositions:
        """Window-relative time positions of the pass's query frames and, per block, of the visible slots."""
        held = self.slot_frames[: self._visible_tokens // self.frame_tokens]  # frame per visible slot
        queries, keys, start = [], [], start_frame
        for size in block_sizes:
            end = start + size
            shift = max(0, end - self.cache_frames)  # frames the window has dropped when this block runs
            queries += [self._window_position(f, shift) for f in range(start, end)]
            keys.append([self._window_position(f, shift) for f in held])
            start = end
        return FramePositions(queries, keys, list(block_sizes))

    def _window_position(self, frame: int, shift: int) -> int:
        if frame < 0:
            raise CacheInvariantError(f"an empty slot is visible: slots hold frames {self.slot_frames}")
        return frame - self.sink_start if self.is_sink(frame) else frame - shift

    def _pass_mask(self, start_frame: int, block_sizes: Sequence[int]) -> torch.Tensor:
        """Token mask [N, M]: query frames of the pass (in order) x visible slots (in slot order).

        A query frame in block [s, e) sees the frame j held by a slot iff j < e and (the slot is a sink
        slot or j >= e - window): `frame_visibility_mask`'s rule, read through the ring.
        """
        keys = torch.tensor(self.slot_frames[: self._visible_tokens // self.frame_tokens])  # frame per slot
        sink = torch.arange(len(keys)) < self.sink_frames
        rows, start = [], start_frame
        for size in block_sizes:
            end = start + size
            visible = (keys >= 0) & (keys < end) & (sink | (keys >= end - self.window_frames))
            rows.append(visible.expand(size, -1))
            start = end
        frames = torch.cat(rows)  # [F, visible slots]
        tokens = frames.repeat_interleave(self.frame_tokens, 0).repeat_interleave(self.frame_tokens, 1)
        return tokens.to(self.keys.device)

    def start_recache(self, mode: str, global_sink: bool = True) -> range:
        """Prepare the KV-recache of a prompt switch; return the frames to run again in one pass.

        The caller then runs those frames' clean latents through the generator under the new prompt
        at their original positions (`begin_block(frames.start, len(frames))`, one block in `longlive`
        mode, the frames' original blocks in `window` mode). The frames end at the latest frame written.

        `longlive` (LongLive v1.0's `_recache_after_switch` and its cached attention): LongLive reruns
        the last min(C, end) frames [a, end) (C = local_attn_size; every frame under global attention)
        in one pass without a mask, writing from its first cache slot:
          - a > 0 with `global_sink` (a late switch): its frames a..a+S-1 are written nowhere and seen
            by no one (`is_recompute` protects the sinks), so only [a+S, end) = [end-R, end) is
            returned; they see the old sinks and each other;
          - a == 0 (an early switch, end <= C): [0, end) is returned, the sink frames included;
          - not `global_sink` (`sink_recache_after_switch`): the cache is emptied (zeroed) and [a, end)
            is returned; its first S frames become the sinks (`sink_start = a`).
        `window` (ours): the frames the cache holds, sinks excepted, [max(S, end-R), end), rerun in
        their original blocks, block-causal; sinks are never rewritten (no `global_sink: false`).
        """
        end, cache, sink, window = self.end_frame, self.cache_frames, self.sink_frames, self.window_frames
        if mode == "window":
            if not global_sink:
                raise CacheInvariantError("recache mode 'window' never rewrites the sinks: global_sink must be true")
            return range(max(self.sink_start + sink, end - window), end)
        if mode != "longlive":
            raise CacheInvariantError(f"recache mode {mode!r} is not 'longlive' or 'window'")
        if end == 0:
            return range(0)
        first = max(0, end - cache)  # LongLive's recache_start_frame
        if global_sink and first > 0:
            return range(first + sink, end)
        if not global_sink:
            self._forget(sink_start=first)
        return range(first, end)

    def _forget(self, sink_start: int) -> None:
        """Zero every slot; the frames from `sink_start` on will be written again, the first S as sinks."""
        self.keys.zero_()
        self.values.zero_()
        self.slot_frames = [-1] * self.cache_frames
        self.sink_start = sink_start

    def visible_frames(self) -> list[int]:
        """Frames the current block attends to, in slot order."""
        return [f for f in self.slot_frames if f >= 0]

    # -- what attention sees ------------------------------------------------------------------------

    def layer(self, layer: int) -> LayerKV:
        """The view of one layer that its attention writes through, for the block begun last."""
        if self._token_index is None:
            raise CacheInvariantError(f"layer {layer} requested before begin_block")
        return LayerKV(self.keys[layer], self.values[layer], self._token_index, self._visible_tokens, self._mask)

    def layers(self, token_index: torch.Tensor | None = None) -> list[LayerKV]:
        """Every layer's view; `token_index` substitutes a tensor holding the same slots (a graph's buffer)."""
        views = [self.layer(i) for i in range(self.keys.shape[0])]
        if token_index is not None:
            views = [LayerKV(v.keys, v.values, token_index, v.visible_tokens, v.mask) for v in views]
        return views

    @property
    def token_index(self) -> torch.Tensor | None:
        """Token slots of the block begun last."""
        return self._token_index

    @property
    def frame_positions(self) -> FramePositions | None:
        """Window-relative RoPE positions of the pass begun last; None with absolute RoPE (keys stored rotated)."""
        return self._positions

    @property
    def visible_tokens(self) -> int:
        return self._visible_tokens

    @property
    def mask(self) -> torch.Tensor | None:
        """Token mask [N, M] of a pass begun over several blocks; None for a single block."""
        return self._mask

    def write(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the current block's K/V [B, N, H, D] in `layer`; return the visible K/V [B, M, H, D]."""
        return self.layer(layer).write(keys, values)


@dataclass
class LayerKV:
    """One layer's buffers [B, C*T, H, D], the slots of the current block and how many tokens are visible.

    `mask` [N, M] (True = may attend) is set only for a pass covering several blocks; attention hands it to SDPA.

    Holding tensors and ints only (no layer number), every layer's attention is the same function of its
    inputs, which is what lets a compiler or a CUDA graph treat all layers alike.
    """

    keys: torch.Tensor
    values: torch.Tensor
    token_index: torch.Tensor
    visible_tokens: int
    mask: torch.Tensor | None = None

    def write(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the block's K/V [B, N, H, D] in its slots; return the visible K/V [B, M, H, D]."""
        if keys.shape[1] != self.token_index.numel():
            raise CacheInvariantError(
                f"write of {keys.shape[1]} tokens to a block of {self.token_index.numel()} token slots"
            )
        self.keys.index_copy_(1, self.token_index, keys.to(self.keys.dtype))
        self.values.index_copy_(1, self.token_index, values.to(self.values.dtype))
        return self.keys[:, : self.visible_tokens], self.values[:, : self.visible_tokens]


def frame_visibility_mask(block_sizes: Sequence[int], cache_frames: int, sink_frames: int) -> torch.Tensor:
    """Which key frame each query frame sees [F, F] when a video is rolled out in `block_sizes` blocks.

    The same rule `KVCache` implements by eviction, written as a mask for one full-sequence forward:
    a frame in block [s, e) sees frame j iff j < e and (j is a sink frame or j >= e - window).
    """
    total = sum(block_sizes)
    window = cache_frames - sink_frames
    mask = torch.zeros(total, total, dtype=torch.bool)
    start = 0
    for size in block_sizes:
        end = start + size
        keys = torch.arange(total)
        visible = (keys < end) & ((keys < sink_frames) | (keys >= end - window))
        mask[start:end] = visible
        start = end
    return mask


@dataclass
class CrossAttentionCache:
    """Text keys and values of one prompt for every layer, each [B, L, H, D].

    Computed once per prompt; switching prompts means building a new one. Training a prompt switch in one
    forward gives each latent frame its own prompt instead: keys and values [B*F, L, H, D] (frame f of
    clip b at row b*F + f), which the model recognises by that batch size (scripts/train_demo.py).
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
