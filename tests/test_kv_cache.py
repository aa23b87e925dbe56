"""KV cache eviction, rewrite and visibility contracts (longlive/kv_cache.py)."""

from __future__ import annotations

import itertools

import pytest
import torch

from longlive.kv_cache import CacheInvariantError, KVCache, frame_visibility_mask

FRAME_TOKENS = 2
CACHE_FRAMES = 6
SINK_FRAMES = 2
WINDOW = CACHE_FRAMES - SINK_FRAMES
HEAD_DIM = 4


def make_cache(cache_frames: int = CACHE_FRAMES, sink_frames: int = SINK_FRAMES, num_layers: int = 1) -> KVCache:
    return KVCache(
        num_layers=num_layers,
        batch_size=1,
        frame_tokens=FRAME_TOKENS,
        cache_frames=cache_frames,
        sink_frames=sink_frames,
        num_heads=1,
        head_dim=HEAD_DIM,
        dtype=torch.float32,
        device="cpu",
    )


def block_kv(start: int, size: int, offset: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys filled with the frame index (+ offset); values with minus that. Shape [1, size*T, 1, D]."""
    frames = torch.arange(start, start + size, dtype=torch.float32).repeat_interleave(FRAME_TOKENS) + offset
    keys = frames.view(1, -1, 1, 1).expand(1, size * FRAME_TOKENS, 1, HEAD_DIM).clone()
    return keys, -keys


def frames_in(keys: torch.Tensor) -> list[float]:
    """The frame index encoded in each visible frame of `keys` [1, M, 1, D], checking token consistency."""
    assert keys.shape[1] % FRAME_TOKENS == 0
    per_frame = keys[0, :, 0, :].reshape(-1, FRAME_TOKENS * HEAD_DIM)
    assert bool((per_frame == per_frame[:, :1]).all()), "tokens of one frame slot hold different frames"
    return per_frame[:, 0].tolist()


def expected_visible(end: int, sink: int = SINK_FRAMES, window: int = WINDOW) -> set[int]:
    return {f for f in range(end) if f < sink or f >= end - window}


def blocks_of(sizes: list[int]) -> list[tuple[int, int]]:
    starts = [0, *itertools.accumulate(sizes)][:-1]
    return list(zip(starts, sizes, strict=True))


ROLLOUTS = {
    "blocks_of_2": [2] * 8,
    "first_1_then_3": [1] + [3] * 5,
}


@pytest.mark.parametrize("sizes", ROLLOUTS.values(), ids=ROLLOUTS.keys())
def test_rollout_keeps_sink_plus_latest_window(sizes):
    cache = make_cache()
    for start, size in blocks_of(sizes):
        end = start + size
        cache.begin_block(start, size)
        keys, values = block_kv(start, size)
        vis_k, vis_v = cache.write(0, keys, values)
        want = expected_visible(end)

        seen = frames_in(vis_k)
        assert len(seen) == len(want), f"block [{start}, {end}): duplicate or missing frames {seen}"
        assert set(seen) == want
        assert sorted(-v for v in frames_in(vis_v)) == sorted(seen)  # values travel with their keys
        assert set(cache.visible_frames()) == want
        assert len(cache.visible_frames()) == len(want)
        assert cache.end_frame == end
        # Sink frames are never evicted once written.
        assert set(range(min(SINK_FRAMES, end))) <= set(seen)
        # The current block is always visible to itself.
        assert set(range(start, end)) <= set(seen)
        # Never more than the cache holds.
        assert vis_k.shape[1] <= CACHE_FRAMES * FRAME_TOKENS
    assert sum(sizes) > CACHE_FRAMES  # the ring has wrapped at least once


@pytest.mark.parametrize("sizes", ROLLOUTS.values(), ids=ROLLOUTS.keys())
def test_visibility_mask_agrees_with_cache(sizes):
    mask = frame_visibility_mask(sizes, CACHE_FRAMES, SINK_FRAMES)
    total = sum(sizes)
    assert mask.shape == (total, total)
    assert mask.dtype == torch.bool
    cache = make_cache()
    for start, size in blocks_of(sizes):
        cache.begin_block(start, size)
        vis_k, _ = cache.write(0, *block_kv(start, size))
        cached = set(frames_in(vis_k))
        assert set(cache.visible_frames()) == cached
        for row in range(start, start + size):
            assert set(torch.nonzero(mask[row]).flatten().tolist()) == cached, f"query frame {row}"


def test_rewrite_same_block_overwrites():
    cache = make_cache()
    sizes = [2, 2, 2, 2]  # ends at frame 8: ring already wrapped
    for start, size in blocks_of(sizes):
        cache.begin_block(start, size)
        cache.write(0, *block_kv(start, size))
    before = cache.visible_frames()

    # Second pass over the last block [6, 8) (a later denoising step / the context pass).
    cache.begin_block(6, 2)
    vis_k, vis_v = cache.write(0, *block_kv(6, 2, offset=100.0))
    seen = frames_in(vis_k)
    assert len(seen) == len(expected_visible(8))  # visible length unchanged
    assert sorted(seen) == sorted([0.0, 1.0, 4.0, 5.0, 106.0, 107.0])  # new values in, old 6, 7 gone
    assert sorted(-v for v in frames_in(vis_v)) == sorted(seen)
    assert cache.visible_frames() == before
    assert cache.end_frame == 8


def test_rewrite_before_wrap_overwrites():
    cache = make_cache()
    cache.begin_block(0, 2)
    cache.write(0, *block_kv(0, 2))
    cache.begin_block(2, 2)
    first, _ = cache.write(0, *block_kv(2, 2))
    cache.begin_block(2, 2)
    second, _ = cache.write(0, *block_kv(2, 2, offset=50.0))
    assert first.shape == second.shape
    assert sorted(frames_in(second)) == [0.0, 1.0, 52.0, 53.0]


def test_partially_overlapping_block_extends():
    cache = make_cache()
    for start, size in blocks_of([3, 3]):
        cache.begin_block(start, size)
        cache.write(0, *block_kv(start, size))
    cache.begin_block(5, 3)  # rewrites frame 5, adds 6 and 7
    vis_k, _ = cache.write(0, *block_kv(5, 3))
    assert set(frames_in(vis_k)) == expected_visible(8) == {0, 1, 4, 5, 6, 7}


def test_each_layer_is_independent():
    cache = make_cache(num_layers=2)
    cache.begin_block(0, 2)
    k0, _ = cache.write(0, *block_kv(0, 2))
    k1, _ = cache.write(1, *block_kv(0, 2, offset=10.0))
    assert frames_in(cache.keys[0][:, :4]) == [0.0, 1.0]
    assert frames_in(k1) == [10.0, 11.0]
    assert frames_in(k0) == [0.0, 1.0]


def _rolled(sizes: list[int]) -> KVCache:
    cache = make_cache()
    for start, size in blocks_of(sizes):
        cache.begin_block(start, size)
        cache.write(0, *block_kv(start, size))
    return cache


def test_skip_ahead_raises():
    cache = _rolled([2, 2, 2])  # end_frame 6
    with pytest.raises(CacheInvariantError) as info:
        cache.begin_block(7, 2)
    msg = str(info.value)
    assert "[7, 9)" in msg and "6" in msg


def test_rewriting_the_past_raises():
    cache = _rolled([2, 2, 2])  # frames 4, 5 exist after [2, 4)
    with pytest.raises(CacheInvariantError) as info:
        cache.begin_block(2, 2)
    msg = str(info.value)
    assert "[2, 4)" in msg and "[0, 6)" in msg


def test_block_larger_than_window_raises():
    """A pass may hold the sinks plus a full ring (LongLive's recache from frame 0), never more: two of its
    frames would share a slot."""
    cache = make_cache()
    cache.begin_block(0, CACHE_FRAMES)  # sinks 0, 1 and the ring 2..5
    with pytest.raises(CacheInvariantError) as info:
        cache.begin_block(0, CACHE_FRAMES + 1)
    msg = str(info.value)
    assert f"[0, {CACHE_FRAMES + 1})" in msg and f"{WINDOW + 1} of them" in msg and f"window of {WINDOW}" in msg
    with pytest.raises(CacheInvariantError, match=rf"\[6, {7 + WINDOW}\)"):
        cache.begin_block(6, WINDOW + 1)  # no sink among them


def test_empty_block_raises():
    cache = make_cache()
    with pytest.raises(CacheInvariantError, match=r"\[0, 0\)"):
        cache.begin_block(0, 0)


def test_failed_begin_block_leaves_state_untouched():
    cache = _rolled([2, 2, 2])
    slots, end = list(cache.slot_frames), cache.end_frame
    with pytest.raises(CacheInvariantError):
        cache.begin_block(8, 2)
    assert cache.slot_frames == slots and cache.end_frame == end


def test_write_without_begin_block_raises():
    cache = make_cache()
    with pytest.raises(CacheInvariantError) as info:
        cache.write(0, *block_kv(0, 2))
    msg = str(info.value)
    assert "begin_block" in msg and "layer 0" in msg


def test_write_of_wrong_size_raises():
    cache = make_cache()
    cache.begin_block(0, 2)
    with pytest.raises(CacheInvariantError) as info:
        cache.write(0, *block_kv(0, 3))
    assert str(3 * FRAME_TOKENS) in str(info.value) and str(2 * FRAME_TOKENS) in str(info.value)


def test_bad_sink_raises():
    with pytest.raises(CacheInvariantError):
        make_cache(cache_frames=4, sink_frames=4)


def test_reset_empties():
    cache = _rolled([2, 2, 2, 2])
    cache.reset()
    assert cache.visible_frames() == []
    assert cache.end_frame == 0
    with pytest.raises(CacheInvariantError):
        cache.write(0, *block_kv(0, 2))  # begin_block is needed again
    # After reset a fresh rollout from frame 0 is accepted and sees only its own frames.
    cache.begin_block(0, 2)
    vis_k, _ = cache.write(0, *block_kv(0, 2, offset=20.0))
    assert frames_in(vis_k) == [20.0, 21.0]


def test_nbytes_constant():
    cache = make_cache()
    nbytes = cache.nbytes
    assert nbytes == 2 * 1 * 1 * CACHE_FRAMES * FRAME_TOKENS * 1 * HEAD_DIM * 4
    ptr = cache.keys.data_ptr()
    for start, size in blocks_of([2] * 10):
        cache.begin_block(start, size)
        cache.write(0, *block_kv(start, size))
        assert cache.nbytes == nbytes
    assert cache.keys.data_ptr() == ptr  # written in place, never reallocated


@pytest.mark.parametrize("sizes", [[2, 2, 2], [1, 3, 3, 2], [3]])
def test_global_attention_mask_is_block_causal(sizes):
    total = sum(sizes)
    mask = frame_visibility_mask(sizes, cache_frames=total, sink_frames=0)
    expected = torch.zeros(total, total, dtype=torch.bool)
    for start, size in blocks_of(sizes):
        expected[start : start + size, : start + size] = True
    assert torch.equal(mask, expected)

    cache = make_cache(cache_frames=total, sink_frames=0)
    for start, size in blocks_of(sizes):
        cache.begin_block(start, size)
        vis_k, _ = cache.write(0, *block_kv(start, size))
        assert sorted(frames_in(vis_k)) == list(range(start + size))


def test_local_mask_first_block_of_1_then_3():
    # Hand-written for cache 6, sink 2 (window 4): blocks [0,1) [1,4) [4,7) [7,10).
    mask = frame_visibility_mask([1, 3, 3, 3], CACHE_FRAMES, SINK_FRAMES)
    rows = {0: {0}, 1: {0, 1, 2, 3}, 4: {0, 1, 3, 4, 5, 6}, 7: {0, 1, 6, 7, 8, 9}}
    for row, want in rows.items():
        assert set(torch.nonzero(mask[row]).flatten().tolist()) == want


# -- LongLive v1.0's cache bookkeeping, read independently, against ours ------------------------------


class LongLiveSlots:
    """LongLive v1.0's cached self-attention bookkeeping (`CausalWanSelfAttention.forward` and
    `_apply_cache_updates` in wan/modules/causal_model.py) replayed on labels: each slot holds the
    (frame, pass) whose K/V it stores, or None for zeros. Counted in frames (LongLive counts tokens,
    always whole frames). LongLive's global attention window of 32760 tokens (21 frames at the
    published size) is not modelled: `local_attn_size=-1` attends to every cached frame here."""

    def __init__(self, local_attn_size: int, sink_size: int, num_output_frames: int) -> None:
        self.local, self.sink = local_attn_size, sink_size
        self.size = num_output_frames if local_attn_size == -1 else local_attn_size
        self.slots: list[tuple[int, int] | None] = [None] * self.size
        self.global_end = self.local_end = 0

    def zero(self) -> None:
        """`global_sink: false` at a switch: K/V zeroed, the end indices kept."""
        self.slots = [None] * self.size

    def run(self, start: int, n: int, label: int, sink_recache: bool = False) -> tuple[list[int], list]:
        """One pass over frames [start, start + n); returns the frames written and the labels attended."""
        end = start + n
        recompute = end <= self.global_end and start > 0  # a rewrite that may not touch the sinks
        slots = list(self.slots)
        if self.local != -1 and end > self.global_end and n + self.local_end > self.size:
            evicted = n + self.local_end - self.size  # roll the window left past the sinks
            kept = self.local_end - evicted - self.sink
            slots[self.sink : self.sink + kept] = slots[self.sink + evicted : self.sink + evicted + kept]
            local_end = self.size
            sink_recache = False  # read only where no roll happens
        else:
            local_end = self.local_end + end - self.global_end
        local_start = local_end - n
        write_start = local_start if sink_recache or not recompute else max(local_start, self.sink)
        first_frame = start + write_start - local_start
        written = list(range(first_frame, first_frame + local_end - write_start))
        for slot, frame in zip(range(write_start, local_end), written, strict=True):
            slots[slot] = (frame, label)
        if self.local == -1:
            attended = slots[:local_end]
        else:  # the sinks and the window ending at local_end, local_attn_size frames in all
            attended = slots[: self.sink] + slots[max(self.sink, local_end - (self.local - self.sink)) : local_end]
        self.slots = slots
        if not recompute:
            self.global_end, self.local_end = end, local_end
        return written, attended


def labelled_kv(frames: range, label: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys filled with the frame index, values with the pass label. Shape [1, n*T, 1, D]."""
    keys, _ = block_kv(frames.start, len(frames))
    return keys, torch.full_like(keys, float(label))


def labels_in(keys: torch.Tensor, values: torch.Tensor) -> list[tuple[int, int]]:
    return sorted((int(f), int(p)) for f, p in zip(frames_in(keys), frames_in(values), strict=True))


LONGLIVE_ROLLOUTS = {
    # (local_attn_size, sink_size, block sizes, blocks before which the prompt switches)
    "published_shape": (12, 3, [3] * 10, [2, 4, 5, 8]),  # switches at frames 6, 12 (= window), 15, 24
    "small_window": (6, 2, [2] * 8, [1, 2, 3, 5, 7]),
    "short_block": (6, 2, [3, 1, 3, 3, 3, 3], [2, 3, 5]),
    "global": (-1, 3, [3] * 6, [1, 3, 5]),
}


@pytest.mark.parametrize("global_sink", [True, False])
@pytest.mark.parametrize("case", LONGLIVE_ROLLOUTS.values(), ids=LONGLIVE_ROLLOUTS.keys())
def test_recache_follows_longlive_index_arithmetic(case, global_sink):
    """Every pass of a rollout with switches (4 denoising passes and a context pass per block, a recache
    at each switch): our cache attends to the same (frame, pass) K/V as LongLive's, and a recache
    writes the frames LongLive's writes (its first S frames of a late switch are written nowhere)."""
    local, sink, sizes, switch_blocks = case
    total = sum(sizes)
    theirs = LongLiveSlots(local, sink, total)
    ours = make_cache(cache_frames=total if local == -1 else local, sink_frames=0 if local == -1 else sink)
    label = 0

    def both(start: int, n: int, longlive_start: int | None = None) -> None:
        nonlocal label
        label += 1
        sink_recache = longlive_start is not None and not global_sink
        if longlive_start is None:
            longlive_start = start
        written, attended = theirs.run(longlive_start, start + n - longlive_start, label, sink_recache)
        assert written == list(range(start, start + n)), f"pass {label}: LongLive writes {written}"
        assert None not in attended, f"pass {label} attends to zeroed slots: {attended}"
        ours.begin_block(start, n)
        seen = labels_in(*ours.write(0, *labelled_kv(range(start, start + n), label)))
        assert seen == sorted(attended), f"pass {label} [{start}, {start + n}): ours {seen}, LongLive {attended}"

    for index, (start, size) in enumerate(blocks_of(sizes)):
        if index in switch_blocks:
            if not global_sink:
                theirs.zero()
            frames = ours.start_recache("longlive", global_sink)
            rerun = start if local == -1 else min(local, start)  # LongLive's num_recache_frames
            both(frames.start, len(frames), longlive_start=start - rerun)
            if global_sink and start > rerun and sink:
                assert frames.start == start - rerun + sink  # its first S frames are dropped
            else:
                assert frames == range(start - rerun, start)
        for _ in range(5):
            both(start, size)
    held = sorted(lbl for lbl in theirs.slots if lbl is not None)
    assert labels_in(ours.keys[0], ours.values[0]) == held


def test_global_sink_false_moves_the_sinks():
    """LongLive's sink_recache_after_switch: a late switch empties the cache and makes the first S rerun
    frames the sinks, which later blocks keep seeing while the ring rolls on."""
    cache = _rolled([2, 2, 2, 2, 1])  # frames 0..8; sink 0, 1 | ring of 4
    cache.keys.fill_(-1.0)
    frames = cache.start_recache("longlive", global_sink=False)
    assert frames == range(3, 9) and cache.sink_start == 3
    assert cache.slot_frames == [-1] * CACHE_FRAMES and not cache.keys.any()  # zeroed
    cache.begin_block(frames.start, len(frames))  # 6 frames: 2 sinks + a full ring
    cache.write(0, *block_kv(3, 6))
    assert cache.slot_frames == [3, 4, 6, 7, 8, 5]
    cache.begin_block(9, 2)
    vis_k, _ = cache.write(0, *block_kv(9, 2))
    assert sorted(frames_in(vis_k)) == [3, 4, 7, 8, 9, 10]
    with pytest.raises(CacheInvariantError, match=r"\[2, 11\).*sink frames \[3, 5\)"):
        cache.begin_block(2, 9)


def test_recache_modes_choose_the_frames():
    """Late switch: longlive reruns the window (the sinks' K/V kept), window mode the same frames; early
    switch: longlive reruns from frame 0 (sinks included), window mode only the frames after the sinks."""
    late = _rolled([2, 2, 2, 2, 1])  # end 9 > cache 6
    assert late.start_recache("longlive") == late.start_recache("window") == range(5, 9)
    early = _rolled([2, 2])  # end 4 <= cache 6
    assert early.start_recache("longlive") == range(0, 4)
    assert early.start_recache("window") == range(2, 4)
    assert _rolled([2, 2, 2]).start_recache("longlive") == range(0, 6)  # end == cache: still from frame 0
    assert make_cache().start_recache("longlive", global_sink=False) == range(0)
    with pytest.raises(CacheInvariantError, match="global_sink"):
        late.start_recache("window", global_sink=False)
    with pytest.raises(CacheInvariantError, match="'dense'"):
        late.start_recache("dense")
