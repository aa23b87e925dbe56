"""`use_infinite_attention` (LongLive's Infinity-RoPE) against LongLive's rule, read independently of our cache.

The reference is LongLive v1.0's `causal_model_infinity.py` read literally: a buffer of frames holding
the sinks first, rolled (the oldest non-sink frames dropped) when a block does not fit, every frame's
RoPE time position its index in that buffer, a recache rewriting it from its first slot. The cached
rollout must equal one masked full forward in which every pass's queries and keys carry those
positions.
"""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import REPO, tiny_config
from omegaconf import OmegaConf
from test_engine import LATENT_HW, cache_for, cached_rollout, random_text

from longlive.attention import FramePositions, RotaryTable, rope_angles, rope_range_warning
from longlive.config import load_config
from longlive.kv_cache import KVCache
from longlive.pipeline import PromptSchedule, VideoConditionalPipeline, compile_blocks

TINY_INTERACTIVE = REPO / "configs" / "tiny_interactive.yaml"


class LongLiveBuffer:
    """LongLive v1.0's infinity cache as a list of entries (an entry: one frame as one pass wrote it)."""

    def __init__(self, cache_frames: int, sink_frames: int) -> None:
        self.size, self.sink = cache_frames, sink_frames
        self.entries: list[int] = []

    def block(self, new: list[int]) -> None:
        """`roll_and_insert` when the block overflows the buffer (sinks kept), else `direct_insert`."""
        overflow = len(self.entries) + len(new) - self.size
        if overflow > 0:
            self.entries = self.entries[: self.sink] + self.entries[self.sink + overflow :]
        self.entries += new

    def recache(self, new: list[int], global_sink: bool) -> list[int]:
        """`_recache_after_switch`: the pass writes from slot 0; with global_sink and a late switch the
        sink slots are protected, so the pass's first S entries are written nowhere (returned: the live ones)."""
        if global_sink and len(new) == self.size and self.sink:
            self.entries = self.entries[: self.sink] + new[self.sink :]
            return new[self.sink :]
        self.entries = list(new)
        return new

    def position(self, entry: int) -> int:
        return self.entries.index(entry)


class Reference:
    """Entries of the whole run in pass order, with the mask and positions LongLive's buffer gives each pass."""

    def __init__(self, cache_frames: int, sink_frames: int) -> None:
        self.buffer = LongLiveBuffer(cache_frames, sink_frames)
        self.frames: list[int] = []  # video frame of each entry
        self.passes: list[tuple[list[int], list[int], dict[int, int]]] = []  # (entries, visible, positions)
        self.rollout: dict[int, dict[int, int]] = {}  # block end -> {frame: position} when that block ran

    def _new(self, frames: range) -> list[int]:
        first = len(self.frames)
        self.frames += list(frames)
        return list(range(first, first + len(frames)))

    def _record(self, entries: list[int]) -> None:
        positions = {e: self.buffer.position(e) for e in self.buffer.entries}
        self.passes.append((entries, list(self.buffer.entries), positions))

    def block(self, frames: range) -> list[int]:
        entries = self._new(frames)
        self.buffer.block(entries)
        self._record(entries)
        self.rollout[frames.stop] = {self.frames[e]: i for i, e in enumerate(self.buffer.entries)}
        return entries

    def window_recache(self, blocks: list[range]) -> None:
        """Ours (`recache_mode: window`): each block rerun sees what it saw in the rollout, at the positions
        it had there, less the frames no longer cached; the sinks are kept."""
        sinks = self.buffer.entries[: self.buffer.sink]
        rerun: dict[int, int] = {}  # frame -> its rerun entry
        for frames in blocks:
            rerun.update(zip(frames, self._new(frames), strict=True))
            seen = self.rollout[frames.stop]
            sink_frames = {self.frames[e]: e for e in sinks}
            positions = {sink_frames.get(f, rerun.get(f)): p for f, p in seen.items() if f in sink_frames or f in rerun}
            self.passes.append(([rerun[f] for f in frames], list(positions), positions))
        self.buffer.entries = sinks + list(rerun.values())

    def recache(self, frames: range, global_sink: bool) -> list[int]:
        live = self.buffer.recache(self._new(frames), global_sink)
        self._record(live)
        return live

    def mask_and_positions(self) -> tuple[torch.Tensor, FramePositions, list[int]]:
        """Frame mask [E, E] and positions over the live entries (in pass order); the entries kept."""
        kept = [e for entries, _, _ in self.passes for e in entries]
        index = {e: i for i, e in enumerate(kept)}
        mask = torch.zeros(len(kept), len(kept), dtype=torch.bool)
        queries, keys, sizes = [], [], []
        for entries, visible, positions in self.passes:
            for e in entries:
                mask[index[e], [index[v] for v in visible]] = True
            queries += [positions[e] for e in entries]
            keys.append([positions.get(e, 0) for e in kept])  # invisible entries: any position, masked
            sizes.append(len(entries))
        return mask, FramePositions(queries, keys, sizes), kept


def _inputs(model, frames: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(1, frames, model.arch.in_channels, *LATENT_HW, generator=g)
    return latents, torch.rand(1, frames, generator=g) * 1000


def _window_cache(model, cache_frames: int, sink_frames: int) -> KVCache:
    cache = cache_for(model, cache_frames, sink_frames)
    cache.window_rope = True
    return cache


@pytest.mark.parametrize(
    ("block_sizes", "cache_frames", "sink_frames"),
    [
        ([2, 2, 2, 2, 2, 2], 6, 2),  # sink 2 + window 4: full after the third block
        ([1, 3, 3, 3, 2, 3], 5, 1),  # uneven blocks (video-conditional), the ring wraps mid-block
    ],
)
@torch.no_grad()
def test_infinite_attention_matches_rule(tiny_model, block_sizes, cache_frames, sink_frames):
    """A rollout past the window with window-relative RoPE == the masked full forward at LongLive's positions;
    it equals absolute RoPE while the window is not full and differs from it afterwards."""
    frames = sum(block_sizes)
    latents, timesteps = _inputs(tiny_model, frames)
    text = tiny_model.prepare_text(random_text(tiny_model.arch))
    reference, start = Reference(cache_frames, sink_frames), 0
    for size in block_sizes:
        reference.block(range(start, start + size))
        start += size
    mask, positions, kept = reference.mask_and_positions()
    assert kept == list(range(frames))
    full = tiny_model(latents, timesteps, text, frame_mask=mask, frame_positions=positions)

    rolled = {}
    for window_rope in (True, False):
        cache = cache_for(tiny_model, cache_frames, sink_frames)
        cache.window_rope = window_rope
        rolled[window_rope] = cached_rollout(tiny_model, latents, timesteps, text, cache, block_sizes)
    torch.testing.assert_close(rolled[True], full, atol=1e-5, rtol=0)

    end = 0
    per_block = (rolled[mode].split(block_sizes, dim=1) for mode in (True, False))
    for size, window, absolute in zip(block_sizes, *per_block, strict=True):
        end += size
        same = torch.allclose(window, absolute, atol=1e-5, rtol=0)
        assert same == (end <= cache_frames), f"block ending at frame {end} (cache {cache_frames})"


@torch.no_grad()
def test_keys_are_cached_unrotated(tiny_model):
    """What the cache stores in the mode: layer 0's key of frame 0, which absolute RoPE stores rotated."""
    latents, timesteps = _inputs(tiny_model, 2)
    text = tiny_model.prepare_text(random_text(tiny_model.arch))
    stored = {}
    for window_rope in (True, False):
        cache = cache_for(tiny_model, 6, 2)
        cache.window_rope = window_rope
        tiny_model(latents, timesteps, text, cache, 0)
        stored[window_rope] = cache.keys[0, :, : cache.frame_tokens]  # [B, T, H, D]
    table = RotaryTable(rope_angles(tiny_model.arch.head_dim, 0, 1, *(n // 2 for n in LATENT_HW)), torch.device("cpu"))
    torch.testing.assert_close(table.apply(stored[True]), stored[False], atol=1e-6, rtol=0)
    assert not torch.allclose(stored[True], stored[False], atol=1e-3)


@pytest.mark.parametrize(("mode", "global_sink"), [("longlive", True), ("longlive", False), ("window", True)])
@torch.no_grad()
def test_recache_matches_rule(tiny_model, mode, global_sink):
    """A recache under the mode, and the blocks after it, == the masked full forward at the rule's positions.

    longlive: LongLive's dense rerun of the last C frames, written from slot 0 (the sinks protected with
    global_sink, the rerun's first S frames then written nowhere), its entries where LongLive's buffer
    puts them. window (ours): each block of the rerun at the positions it had in the rollout."""
    cache_frames, sink_frames, size = 6, 2, 2
    before, after = 5, 2  # blocks before the switch (10 frames, past the window) and after it
    latents, timesteps = _inputs(tiny_model, size * (before + after) + cache_frames, seed=1)
    text = tiny_model.prepare_text(random_text(tiny_model.arch))
    reference, cache = Reference(cache_frames, sink_frames), _window_cache(tiny_model, cache_frames, sink_frames)
    outputs, inputs, times = [], [], []

    def run(start: int, first: int, count: int, block_sizes=None) -> None:
        x, t = latents[:, first : first + count], timesteps[:, first : first + count]
        outputs.append(tiny_model(x, t, text, cache, start, block_sizes=block_sizes))
        inputs.append(x)
        times.append(t)

    for b in range(before):
        reference.block(range(b * size, (b + 1) * size))
        run(b * size, b * size, size)
    end = before * size
    rerun = cache.start_recache(mode, global_sink)
    fresh = end + cache_frames - len(rerun)  # the rerun's latents are new ones: the cache must take them
    if mode == "window":
        blocks = [range(max(s, rerun.start), s + size) for s in range(0, end, size) if s + size > rerun.start]
        reference.window_recache(blocks)
        run(rerun.start, fresh, len(rerun), block_sizes=[len(b) for b in blocks])
    else:
        live = reference.recache(range(end - cache_frames, end), global_sink)  # what LongLive reruns
        assert len(live) == len(rerun)
        run(rerun.start, fresh, len(rerun))
        # The rerun's queries sit where LongLive puts them: after the sinks, or from 0 when it rewrites them.
        assert cache.frame_positions.queries == list(range(cache_frames - len(rerun), cache_frames))
    for b in range(after):
        reference.block(range(end + b * size, end + (b + 1) * size))
        run(end + b * size, end + cache_frames + b * size, size)

    mask, positions, kept = reference.mask_and_positions()
    assert len(kept) == sum(x.shape[1] for x in inputs)
    full = tiny_model(torch.cat(inputs, 1), torch.cat(times, 1), text, frame_mask=mask, frame_positions=positions)
    torch.testing.assert_close(torch.cat(outputs, 1), full, atol=1e-5, rtol=0)


def test_rope_range_warning_names_the_switch(caplog):
    """Absolute RoPE past the trained 240 frames warns once per pipeline, naming use_infinite_attention;
    the mode with a local window never warns."""
    assert rope_range_warning(240, False, 12) is None
    message = rope_range_warning(1050, False, 12)
    assert "model_kwargs.use_infinite_attention=true" in message and "1024" in message and "\n" not in message
    assert "1024" not in rope_range_warning(241, False, 12)
    assert rope_range_warning(100_000, True, 12) is None
    assert "local_attn_size" in rope_range_warning(300, True, 300)

    pipe = VideoConditionalPipeline.from_config(tiny_config())
    with caplog.at_level(logging.WARNING, logger="longlive.pipeline"):
        assert not pipe.check_rope_range(200)
        assert pipe.check_rope_range(1050) and pipe.check_rope_range(5000)
    assert [r.message for r in caplog.records if "use_infinite_attention" in r.message] == [message]
    infinite = VideoConditionalPipeline.from_config(tiny_config("model_kwargs.use_infinite_attention=true"))
    assert not infinite.check_rope_range(5000)


@torch.no_grad()
def test_pipeline_with_infinite_attention():
    """The config key reaches the cache; an interactive rollout switching past the window runs in every
    recache mode, equals absolute RoPE before the window fills and differs after; compiled blocks agree."""
    schedule = PromptSchedule(("a red square", "a blue circle"), (9,))
    runs = {}
    for name, extra in (
        ("absolute", []),
        ("longlive", ["model_kwargs.use_infinite_attention=true"]),
        ("longlive, global_sink false", ["model_kwargs.use_infinite_attention=true", "global_sink=false"]),
        ("window", ["model_kwargs.use_infinite_attention=true", "recache_mode=window"]),
    ):
        pipe = VideoConditionalPipeline.from_config(load_config(TINY_INTERACTIVE, extra))
        results = list(pipe.stream_prompts(schedule, seed=0, decode=False))
        assert results[3].switch is not None and results[3].switch.recached is not None
        runs[name] = torch.cat([r.latents for r in results], dim=1)
        assert pipe.kv_cache.window_rope == (name != "absolute")
        if name == "window":
            compile_blocks(pipe.generator)
            compiled = torch.cat([r.latents for r in pipe.stream_prompts(schedule, seed=0, decode=False)], dim=1)
            torch.testing.assert_close(compiled, runs[name], atol=1e-5, rtol=0)
    cache_frames = pipe.geometry.cache_frames
    for name, latents in runs.items():
        torch.testing.assert_close(latents[:, :cache_frames], runs["absolute"][:, :cache_frames], atol=1e-5, rtol=0)
        if name != "absolute":
            assert not torch.allclose(latents[:, cache_frames:], runs["absolute"][:, cache_frames:], atol=1e-4)


@pytest.mark.parametrize("job", ["video_conditional", "interactive"])
def test_infinity_configs_mirror_the_longlive_ones(job):
    """The shipped infinity configs are the LongLive ones with LongLive's infinity settings, nothing else."""
    base = OmegaConf.to_container(load_config(REPO / "configs" / f"longlive_{job}_inference.yaml"))
    infinity = OmegaConf.to_container(load_config(REPO / "configs" / f"longlive_{job}_infinity.yaml"))
    assert infinity["model_kwargs"].pop("use_infinite_attention") and not base["model_kwargs"].pop(
        "use_infinite_attention"
    )
    assert infinity["num_output_frames"] == 1050 and infinity["global_sink"] and infinity["context_noise"] == 0
    changed = {key for key in base if base[key] != infinity[key]}
    assert changed <= {"num_output_frames", "output_folder", "switch_frame_indices"}
