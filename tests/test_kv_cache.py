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
    cache = make_cache()
    with pytest.raises(CacheInvariantError) as info:
        cache.begin_block(0, WINDOW + 1)
    msg = str(info.value)
    assert f"[0, {WINDOW + 1})" in msg and str(WINDOW) in msg


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
