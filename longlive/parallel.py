"""One stream over several ranks: Ulysses sequence parallelism for the generator; the decode on one rank or
split by rows over them.

    torchrun --nproc_per_node=2 --no-python longlive t2v --config_path ... parallel.sequence=2

The world is cut into groups of `parallel.sequence` consecutive ranks; each group runs ONE rollout and
the groups shard a job's samples as single ranks do (sample i -> group i % groups). Inside a group every
rank runs the same loop on the same noise (same seed), so the sampler's steps, the prompt schedule and
the cache bookkeeping agree without messages; only the generator's passes talk:

    rank r of N holds, per latent frame, the tokens [r*t, (r+1)*t) (t = ceil(T/N), the last rank's
    share padded) for the linear layers, norms, FFN and cross-attention (its queries, all heads, the
    text K/V being whole on every rank), and heads [r*H/N, (r+1)*H/N) of every token for self-attention:

        q, k, v [B, F*t, H, D] --all_to_all--> [B, F*T, H/N, D] -> KV cache (H/N heads) -> attention
        out [B, F*T, H/N, D] --all_to_all--> [B, F*t, H, D] -> o projection
        head output [B, F, t, ...] --all_gather--> [B, F, T, ...] on every rank

Cross-attention keeps the tokens local: each query token attends to the whole prompt alone, so splitting
its heads would only add two exchanges. RoPE is applied before the exchange with each rank's rows of the
block's table (the tokens' true positions); under window-relative RoPE (`use_infinite_attention`) the
queries are rotated so, and the keys, cached unrotated, by the visible keys' tables after the exchange.
Padding tokens never reach attention: they are dropped after the exchange to heads and put back (as
zeros) before the exchange back. Every step is the single-process
arithmetic on a subset of rows or heads, so the result agrees with one process up to the order of
floating-point reductions inside the kernels (bit-for-bit where the kernels' order does not depend on
the row count).

One rank of the group (`parallel.vae_rank`) receives the frames, writes the outputs and takes a live
session's commands (`agree`). With `parallel.split_decode` (the default) every rank decodes its share of
each frame's rows (`SplitDecode`, `longlive.vae_split`) and the vae_rank gathers them, over a second
communicator of the same ranks so that a gather queued beside the generator (overlap_decode) never waits
behind its exchanges, nor they behind it. With `split_decode: false` the vae_rank decodes alone; the others
have the block's latents too (the gathered head output) and go on to the next pass, where they wait in its
first exchange until the decoding rank joins, unless `parallel.overlap_decode` queues the decode beside the
next block's passes (`pipeline.decode_alongside`).

Applied from outside the model: `apply` sets a strategy object on the model and its attention layers;
with none set the model is the one-process path.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.profiler import record_function

from longlive.attention import RotaryTable, WindowRotary
from longlive.config import ConfigError
from longlive.distributed import World
from longlive.model import CausalWanModel, TokenExchange
from longlive.vae import StreamingVAE
from longlive.vae_split import RowShare, share_rows

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamGroup:
    """The ranks that run one stream together, seen from one of them.

    `rank` and `size` are within the group; `index` and `count` place the group among the world's
    groups (the job's sharding reads those); `ranks` are the group's global ranks.
    """

    rank: int
    size: int
    index: int
    count: int
    ranks: tuple[int, ...]
    vae_rank: int
    process_group: dist.ProcessGroup | None = None
    decode_group: dist.ProcessGroup | None = None  # the same ranks: the split decode's gathers

    @property
    def decodes(self) -> bool:
        """This rank receives the stream's frames and writes its outputs (with `split_decode` every rank of
        the group decodes rows of them, but only this one receives the frames)."""
        return self.rank == self.vae_rank

    @property
    def shard_world(self) -> World:
        """The world the job shards samples over: one seat per group."""
        return World(rank=self.index, world_size=self.count)


def stream_group(world: World, sequence: int, vae_rank: int = 0) -> StreamGroup:
    """This rank's group of `sequence` consecutive ranks; every rank must call it (it creates the groups)."""
    if world.world_size % sequence:
        raise ConfigError(
            f"parallel.sequence={sequence} must divide the number of ranks ({world.world_size}): "
            f"run torchrun --nproc_per_node with a multiple of it"
        )
    count = world.world_size // sequence
    index = world.rank // sequence
    mine = decoding = None
    if sequence > 1:
        for group in range(count):  # new_group is collective: every rank creates every group, in order
            members = list(range(group * sequence, (group + 1) * sequence))
            handles = dist.new_group(members), dist.new_group(members)  # the generator's, the split decode's
            mine, decoding = handles if group == index else (mine, decoding)
    ranks = tuple(range(index * sequence, (index + 1) * sequence))
    return StreamGroup(world.rank % sequence, sequence, index, count, ranks, vae_rank, mine, decoding)


class Ulysses(TokenExchange):
    """The exchanges of one group's generator: tokens split per frame, heads split for self-attention."""

    def __init__(self, group: StreamGroup, frame_tokens: int, num_heads: int) -> None:
        if num_heads % group.size:
            raise ConfigError(f"parallel.sequence={group.size} must divide the model's {num_heads} heads")
        self.group = group
        self.size = group.size
        self.rank = group.rank
        self.frame_tokens = frame_tokens
        self.local_tokens = -(-frame_tokens // group.size)  # t = ceil(T/N) per frame per rank
        self.padding = self.local_tokens * group.size - frame_tokens

    # -- tokens ------------------------------------------------------------------------------------

    def _pad(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """Pad dim `dim` (tokens of a frame) from T to N*t with zeros."""
        if not self.padding:
            return x
        pad = [0, 0] * (x.ndim - 1 - dim) + [0, self.padding]
        return F.pad(x, pad)

    def split_tokens(self, x: torch.Tensor, dim: int = 2) -> torch.Tensor:
        """This rank's tokens of every frame: [B, F, T, C] -> [B, F, t, C] (tokens of a frame along `dim`)."""
        t = self.local_tokens
        return self._pad(x, dim).narrow(dim, self.rank * t, t)

    def gather_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Every rank's tokens, on every rank: [B, F, t, C] -> [B, F, T, C]."""
        parts = [torch.empty_like(x) for _ in range(self.size)]
        dist.all_gather(parts, x.contiguous(), group=self.group.process_group)
        return torch.cat(parts, dim=2)[:, :, : self.frame_tokens]

    def local_rope(self, rope: RotaryTable | WindowRotary) -> RotaryTable | WindowRotary:
        """The rows of a block's table [F*T, 1, D] that this rank's tokens take, [F*t, 1, D].

        Window-relative RoPE: only the queries' table is cut to this rank's rows (queries are rotated
        before the exchange); the visible keys' tables stay whole, as attention (after the exchange to
        heads) rotates the keys of every token of this rank's heads.
        """
        if isinstance(rope, WindowRotary):
            return WindowRotary(self.local_rope(rope.queries), rope.keys, rope.group_tokens)
        rows = [self.split_tokens(t.unflatten(0, (-1, self.frame_tokens)), dim=1) for t in (rope.cos, rope.sin)]
        return RotaryTable.from_tables(*(r.flatten(0, 1).contiguous() for r in rows))

    # -- heads -------------------------------------------------------------------------------------

    def _all_to_all(self, send: torch.Tensor) -> torch.Tensor:
        received = torch.empty_like(send)
        dist.all_to_all_single(received, send, group=self.group.process_group)
        return received

    def to_heads(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Local tokens, all heads [B, F*t, H, D] -> all tokens, local heads [B, F*T, H/N, D], for each of
        `tensors` (q, k, v) in one exchange."""
        batch, _, heads, dim = tensors[0].shape
        x = torch.stack(tensors, dim=2)  # [B, F*t, K, H, D]
        x = x.reshape(batch, -1, self.local_tokens, len(tensors), self.size, heads // self.size, dim)
        received = self._all_to_all(x.permute(4, 0, 1, 2, 3, 5, 6).contiguous())  # [N(source), B, F, t, K, h, D]
        tokens = received.permute(1, 2, 0, 3, 4, 5, 6).flatten(2, 3)  # [B, F, N*t, K, h, D]
        return tokens[:, :, : self.frame_tokens].flatten(1, 2).unbind(2)  # K x [B, F*T, h, D]

    def to_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """All tokens, local heads [B, F*T, h, D] -> local tokens, all heads [B, F*t, H, D]."""
        batch, _, heads, dim = x.shape
        x = self._pad(x.unflatten(1, (-1, self.frame_tokens)), 2)  # [B, F, N*t, h, D]
        x = x.unflatten(2, (self.size, self.local_tokens))  # [B, F, N, t, h, D]
        received = self._all_to_all(x.permute(2, 0, 1, 3, 4, 5).contiguous())  # [N(head chunk), B, F, t, h, D]
        return received.permute(1, 2, 3, 0, 4, 5).reshape(batch, -1, self.size * heads, dim)


def apply(model: CausalWanModel, ulysses: Ulysses | None) -> None:
    """Run `model`'s passes split over the group (None: back to one process). Sets the strategy object
    the model and its self-attention layers consult; their code paths stay the same otherwise."""
    model.sequence_parallel = ulysses
    for block in model.blocks:
        block.self_attn.sequence_parallel = ulysses


def agree(value, group: StreamGroup | None):
    """The decoding rank's `value` on every rank of the group (a live prompt, or None for a stop): that
    rank takes a session's commands, as it writes the session's video."""
    if group is None or group.size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=group.ranks[group.vae_rank], group=group.process_group)
    return box[0]


def follow_session(pipeline, video: torch.Tensor | None, seed: int, max_frames: int | None = None) -> None:
    """A session's rollout on a rank that does not decode: the prompts (and the stop) come from the rank
    that does, through `agree` at each block boundary (`VideoConditionalPipeline.stream_prompts`). Its
    length is the session's (`Session`'s `max_frames`; None: until the decoding rank stops)."""
    end = math.inf if max_frames is None else max_frames
    for _ in pipeline.stream_prompts(lambda block: "", video, seed=seed, num_output_frames=end):
        pass


class SplitDecode:
    """A group's streamed decode split by rows (`parallel.split_decode`), with `StreamingVAE.decode`'s call:
    every rank decodes its rows of each block through its own causal caches, and the vae_rank receives the
    others' and returns the whole frames (the others return None). Every rank must decode every block."""

    def __init__(self, vae: StreamingVAE, group: StreamGroup) -> None:
        self.vae = vae
        self.group = group
        vae.split_rows(RowShare(group.rank, group.size))

    @property
    def device(self) -> torch.device:
        return self.vae.device

    def decode(self, latents: torch.Tensor) -> torch.Tensor | None:
        """Latents [B, F, C, h, w] -> frames [B, 3, N, H, W] on the vae_rank, None on the others."""
        rows = self.vae.decode(latents)  # [B, 3, N, this rank's rows, W]
        height = latents.shape[-2]
        scale = self.vae.row_plan(height).heights[-1] // height
        counts = [(stop - start) * scale for start, stop in share_rows(height, self.group.size)]
        with record_function("gather"):
            return gather_rows(rows, counts, self.group)


def gather_rows(rows: torch.Tensor, counts: list[int], group: StreamGroup) -> torch.Tensor | None:
    """Each rank's rows [..., counts[rank], W] stacked in rank order on the vae_rank (None elsewhere). The
    shares differ by at most a latent row's worth: each is padded to the largest for one gather."""
    tallest = max(counts)
    padded = F.pad(rows, (0, 0, 0, tallest - rows.shape[-2])).contiguous()
    received = [torch.empty_like(padded) for _ in counts] if group.decodes else None
    dist.gather(padded, received, dst=group.ranks[group.vae_rank], group=group.decode_group)
    if received is None:
        return None
    return torch.cat([part.narrow(-2, 0, count) for part, count in zip(received, counts, strict=True)], dim=-2)
