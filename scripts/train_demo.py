"""Train the demo model on the demo world (longlive/demo_world.py) and save it as a `wan_model_dir`.

    python scripts/train_demo.py --output_dir demo_model --device cuda            # every stage
    python scripts/train_demo.py --output_dir demo_model --device cuda --stage vae --max_seconds 160
    python scripts/train_demo.py --output_dir demo_model --device cuda --stage decoder --max_seconds 420
    python scripts/train_demo.py --output_dir demo_model --device cuda --stage generator --max_seconds 320
    python scripts/train_demo.py --output_dir demo_model --device cuda --stage generator --resume --max_seconds 400
    python scripts/train_demo.py --output_dir /tmp/demo --device cpu --max_steps 5 # a smoke run

`--stage vae` writes `vae/`; `--stage decoder` fine-tunes its decoder on full-length clips;
`--stage generator` reads `vae/` back and writes the rest, so each stage fits one command of a lent
GPU; `--max_seconds` ends a stage on time (it saves what it trained), and `--resume` continues the
generator and text encoder saved in `--output_dir` on fresh clips. `train_log.json` keeps each stage's
settings, time and losses, and `commands`, the command lines that made the folder, in order.

Stage 1 trains the VAE (`AutoencoderKLWan` at the preset's small size) as an autoencoder on the
world's clips (MSE with the shape's pixels weighted up, plus a small KL), then measures its latents'
per-channel mean and std, which it saves in `vae/config.json` so the engine normalises latents exactly
as the generator was trained on them. Stage 1b (`decoder`) then trains the decoder alone on clips as
long as the generator's, the encoder and statistics frozen (see `train_decoder`; `--first_frame_weight`
and `--decoder_mean` for the first frame's colour).
Stage 2 trains the block-causal generator (`CausalWanModel`) with diffusion forcing: every latent frame
gets its own timestep from the sampler's shifted grid, the target is the flow v = eps - x0, and
attention follows the block-causal `frame_visibility_mask` of the inference window (sink and rolling
window included), so the 4-step sampler and the KV cache see at inference what training showed them.
With probability `clean_context_prob` a clip's first blocks are clean (t = 0, no loss there), as the
KV cache holds them at inference (`context_noise=0`). Change clips (the world's second part changes
colour or direction) are captioned with their change caption for the whole clip. At inference the
conditioning frames enter the cache under prompt1 and, being the sink frames of the demo window, stay
there through the switch (`recache_conditioning` is off: nothing reruns them); conditioning under
prompt2 instead was measured to change little (the share of frames in the asked-for colour went from
0.45 to 0.47 on 6 clips).

Long clips (issue 19): `--clip_latent_frames N` trains the generator stage on clips of N latent frames
(`num_latent_frames` stays the VAE and decoder stages' length). Past `local_attn_size` the same
`frame_visibility_mask` rolls the window (sinks kept), so one forward shows every block exactly what the
KV cache shows it when rolling out that far; `--infinite_attention` gives the frames the window-relative
RoPE positions of `model_kwargs.use_infinite_attention` (read from a `KVCache`, see `window_positions`)
instead of absolute ones. Train with the mode the config infers with.

Contexts at the wrong speed (issue 19): `--context_speed_jitter J` gives a share `--context_jitter_prob` of
the bank's clips a context of whole blocks (a random number, at least one block short of the clip) in
which the shape moves up to J times too fast or too slow along its line, arriving where the world has
it (`demo_world.hurried_context`), then the world's own continuation. Those blocks are clean context (no
loss; `ContextJitter` decides per clip index, so the renderer and the training step agree). A model
trained on true contexts alone continues the speed it sees, so its own few percent off compound over a
long rollout; here the continuation does not follow the context, and the speed is the world's.
`--context_offset_px O` shows the shape in such a context up to O px off where the world has it, per axis
(`demo_world.shifted_context`), where no hurried run fits: the world keeps its shapes on a lattice of whole
steps (`demo_world.lattice_gaps`), and the continuation comes back onto it.
`--context_creep` keeps such a context's sink frames true and creeps the shape off from there, linearly, to
the offset at the context's end: what the generator's own output does at inference, where the sinks are the
true conditioning frames and the shape creeps a fraction of a pixel a block along the axis the world keeps
still (issue 19: validation seed 6007, 7 px off after 100 latent frames, held within 1 px after one such run;
BENCHMARKS.md, eleventh session).

`--ema_decay D` saves an exponential moving average of the run's weights (decay D a step; the last iterate
under `last_iterate/`): at a constant learning rate the last iterate is one noisy point, and two runs of one
setting from one parent ended far apart (issue 19, BENCHMARKS.md, eighth session).

Own rollouts as context (issue 19): `--rollout_prob P` makes a share P of the steps first sample blocks
1..k-1 of each clip with the generator itself (`rollout_context`: the engine's sampler and noise order, the
inference mask, no gradients; k random in 2..blocks-1), then train diffusion forcing on the clip's true
later blocks with those sampled blocks as clean context. Trained on true context only, the model never
sees its own errors; in a long rollout they compound (its speed drifts off the path). Here the target
after a drifted context is still the true continuation, so a systematic error is trained away.

Consistent targets (issue 19): `--rollout_targets consistent` learns, after such a sampled context, not
the clip's true later blocks (which contradict a context whose shape sits a little off the truth, and
measured on a GPU taught double and faded blobs) but the clip re-rendered to continue from where the
model put the shape (`consistent_targets`): the last context frame is decoded as the pipeline decodes,
the shape's offset from the truth measured there (`foreground_centroid`), and the clip's true state
(colour, direction, speed, size, a later change) shifted by it and continued by the world's own physics
(`shifted_continuation`), then encoded as the bank is. Clips whose sampled context shows no shape keep
their true targets. `true` (the default) trains the true later blocks as before. Only the context's last
`CONTEXT_DECODE_LATENTS` latent frames are decoded and the clip is encoded from `TARGET_WARMUP_LATENTS`
before the context's end, within 0.15 px of the whole decode and encode on the demo VAE, and on a GPU
`VAE_PER_CALL` latent frames go through the VAE per call (its frame-by-frame loops are launch-bound there).

Prompt switches anywhere (issue 19): `--switch_anywhere` makes change clips change at a random block
boundary after the first (late in a long clip too), the frames before it under prompt1 and those after
under prompt2, each frame's tokens cross-attending to their own frame's prompt (`per_frame_text`). At a
late switch the engine recaches the window under prompt2 (`recache_on_switch`, `recache_mode`: longlive
in the demo config); training mirrors it (`--switch_recache`, `PromptSwitch`): the frames the engine
reruns are clean and under prompt2, context only. The video-conditional switch at `change_latent_frame`
has no recache at inference, and none in training.

The text encoder is a random-initialised UMT5 at the preset's size with the byte-level tokenizer,
**trained jointly** with the generator (at the same learning rate): a frozen random encoder of
byte tokens mixes every character into every position, so "red" and "blue" differ only by a few random
features; training it costs 0.4M parameters and lets the colour, shape and direction words separate.
`--freeze_text_encoder` keeps it at its seeded random weights instead.

The output folder is in the diffusers layout `longlive.components.locate_wan_files` reads:
`transformer/diffusion_pytorch_model.safetensors` (original Wan names), `vae/` and `text_encoder/`
(`save_pretrained`), `tokenizer/`, and `train_log.json` (settings, losses, seconds per stage).
Seeded: the same command on the same device and library versions trains the same model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from transformers import PreTrainedTokenizerBase, UMT5EncoderModel

from longlive.attention import FramePositions
from longlive.demo_world import (
    BACKGROUND,
    Change,
    Clip,
    DemoWorld,
    Scene,
    foreground_centroid,
    foreground_mask,
    hurried_context,
    hurried_start,
    paint,
    rasterize,
    shifted_context,
    trajectory,
)
from longlive.kv_cache import CrossAttentionCache, KVCache, frame_visibility_mask
from longlive.model import CausalWanModel, init_random_weights
from longlive.presets import PRESETS, ModelPreset
from longlive.sampler import NUM_TRAIN_TIMESTEPS, FlowMatchSampler, shifted_sigmas
from longlive.text_encoder import byte_level_tokenizer, embed_prompts, umt5_config
from longlive.vae import StreamingVAE, build_vae
from longlive.weights import load_vae

logger = logging.getLogger("train_demo")
# Video frames per latent frame after the first: the Wan VAE's, every preset's (the clips' lengths count in it).
VAE_STRIDE = PRESETS["demo"].vae.temporal_stride
# The world stream --stage decoder reads (vae: 1, generator runs: 2, 3, ...). Seed s's stream 1000 is seed
# s + 1's stream 0, which no stage reads.
DECODER_STREAM = 1000


@dataclass
class TrainConfig:
    """Every setting of a run; saved in train_log.json."""

    output_dir: str = "demo_model"
    model_name: str = "demo"
    device: str = "auto"
    seed: int = 0
    height: int = 64
    width: int = 64
    num_latent_frames: int = 12  # latent frames a training clip holds (4T-3 = 45 video frames)
    # The inference geometry (configs/demo_video_conditional.yaml): blocks of 3, window 9 with 3 sinks.
    frames_per_block: int = 3
    local_attn_size: int = 9
    sink_size: int = 3
    timestep_shift: float = 5.0
    change_prob: float = 0.5  # share of clips whose second part changes (captioned with prompt2)
    change_latent_frame: int = 3  # the change starts at this latent frame (video frame 4k-3 = 9)
    clean_context_prob: float = 0.5
    # --stage generator: the share of clips whose first blocks (a random number of them, clean context, no loss)
    # show the shape moving up to this factor too fast or too slow along its line, arriving where the world has
    # it (`demo_world.hurried_context`): the generator learns to go on at the world's speed, not the context's.
    context_speed_jitter: float = 0.0
    context_jitter_prob: float = 0.5
    # --stage generator: those clips' first blocks show the shape up to this many px off where the world has it,
    # per axis (`demo_world.shifted_context`; with context_speed_jitter, where no hurried run fits): off the
    # world's lattice by less than half a step, the continuation on it, so the generator learns to come back.
    context_offset_px: float = 0.0
    # With context_offset_px (issue 19): a shifted context keeps its first sink_size latent frames where the
    # world has them and creeps off from there, linearly, to the offset at its end (`shifted_context`'s
    # creep_from). At inference the sinks are the true conditioning frames and the generator's own output
    # creeps off the path a fraction of a pixel a block, on the axis the world keeps still; a context shifted
    # as a whole, sinks included, never shows that.
    context_creep: bool = False
    # With context_offset_px (issue 19): the share of shifted contexts reaching a latent frame past a change of
    # direction whose creep starts at the change instead and runs along the axis the shape moved on before it
    # (`ContextJitter.turn_creep`). After a late turn the generator's own output can slide back along the old
    # axis (the test's seed-5001 long case), which a creep from the sinks, off the path on both axes alike,
    # never shows; the continuation turns where the world turns.
    turn_creep: float = 0.0
    # With turn_creep: such a context is off by its whole offset from the change on, at once, not creeping from
    # zero: a turn made short or late. The test's seed-5001 case fails so: the shape turns about 2 px short, and
    # the generator drifts on from there (BENCHMARKS.md, twelfth session).
    turn_jump: bool = False
    # --stage generator on long clips (issue 19): latent frames per generator clip (default num_latent_frames);
    # past local_attn_size the mask rolls the window as the KV cache does, so training sees long rollouts.
    clip_latent_frames: int | None = None
    infinite_attention: bool = False  # window-relative RoPE positions, as model_kwargs.use_infinite_attention
    # --stage generator: change clips change (and switch prompts) at a random block boundary after the first
    # block, each frame under its own prompt (see `PromptSwitch`); off: the change caption for the whole clip.
    switch_anywhere: bool = False
    # With switch_anywhere: the share of change clips that switch at change_latent_frame, the first generated
    # block of a video-conditional job (its switch has no recache), the rest spread evenly over the later block
    # boundaries; 0: every boundary alike (the first then gets 1 in clip_latent_frames / frames_per_block - 1).
    first_switch_share: float = 0.0
    # What the engine does to the cached window at such a switch (`recache_mode` with recache_on_switch, the
    # demo config's longlive), mirrored in training: longlive | window | none (recache_on_switch: false).
    switch_recache: str = "longlive"
    # --stage generator (issue 19): the share of steps whose context is the generator's own rollout
    # (`rollout_context`): blocks 1..k-1 sampled by the engine's few-step sampler from the clip's first block,
    # k random, then the loss on the clip's true later blocks; 0: diffusion forcing on true context alone.
    rollout_prob: float = 0.0
    # What a rollout step learns after its sampled context: the clip's true later blocks (true), or the clip
    # re-rendered to continue from where the sampled context put the shape (consistent, `consistent_targets`).
    rollout_targets: str = "true"
    # --stage generator: the run saves an exponential moving average of its weights with this decay per step
    # (`WeightAverage`), its last iterate under `last_iterate/` (--resume goes on from the average); 0 saves the
    # last iterate. At a constant learning rate the last iterate is one noisy point: two runs of one setting
    # ended far apart (issue 19).
    ema_decay: float = 0.0
    # --stage generator (issue 19): the flow loss at the shape's latent positions weighs up to this many times
    # the background's (`latent_foreground_weights`); 1 weighs them alike. The shape is a few of the 64
    # latent positions of a frame, and how far it moved is what the model gets wrong at length.
    latent_foreground_weight: float = 1.0
    # The sampler's nominal steps, as the demo config's `denoising_step_list` (warped onto the shifted grid).
    denoising_steps: tuple[int, ...] = (1000, 750, 500, 250)
    vae_steps: int = 6000
    vae_batch_size: int = 128  # the VAE's chunk loop is launch-bound on a GPU: large batches cost little more
    foreground_weight: float = 9.0  # the shape's pixels weigh 10x in the VAE loss (see vae_loss)
    vae_latent_frames: int = 4  # stage 1 clips are short (13 video frames): the causal VAE runs chunk by chunk
    vae_lr: float = 6e-4
    stats_clips: int = 512  # clips the latent statistics are measured on
    decoder_steps: int = 3000  # --stage decoder: the decoder alone on generator-length clips
    decoder_batch_size: int = 32
    # --stage decoder: video frame 0 (encoded and decoded alone by the causal VAE) weighs this many times the
    # others in the loss; 1 weighs every frame alike (issue 19: frame 0 came back in the wrong colour).
    first_frame_weight: float = 1.0
    # --stage decoder: decode the posterior mean, as StreamingVAE decodes at inference, not a sample of it
    # (the demo VAE's posterior std is 0.3-4x its latents' spread: samples are not what inference decodes).
    decoder_mean: bool = False
    kl_weight: float = 1e-6
    generator_steps: int = 30000
    batch_size: int = 128
    bank_clips: int = 24576  # stage 2 encodes this many clips once and samples its batches from them
    encode_batch_size: int = 512
    lr: float = 3e-4
    freeze_text_encoder: bool = False
    grad_clip: float = 1.0
    # Steps over which the learning rate rises linearly to its value. None: WARMUP_FROM_TRAINED when the stage
    # starts from trained weights (--resume for the generator; --stage decoder, which fine-tunes the trained
    # decoder), 0 from scratch. AdamW's first steps move every weight by about the learning rate whatever its
    # gradient: resuming the demo generator at lr 1e-4 without it raised the loss of the same batches by 44%
    # at step 5 (0.124 against 0.086 with a 20-step warm-up), level again by step 20 (CPU, 2026-11-30).
    warmup_steps: int | None = None
    max_steps: int | None = None  # caps both stages (smoke runs)
    max_seconds: float | None = None  # each stage stops after this many seconds of training
    # all | vae (writes vae/) | generator (reads vae/ from output_dir, writes the rest) | decoder (rewrites vae/)
    stage: str = "all"
    resume: bool = False  # --stage generator: start from the generator and text encoder in output_dir
    log_every: int = 100
    workers: int = 14  # processes rendering clips (the world is drawn on the CPU)

    @property
    def num_video_frames(self) -> int:
        return first_video_frame(self.num_latent_frames)

    @property
    def generator_latent_frames(self) -> int:
        """Latent frames of a generator training clip: `clip_latent_frames`, else `num_latent_frames`."""
        return self.clip_latent_frames or self.num_latent_frames

    @property
    def generator_video_frames(self) -> int:
        """Video frames of a generator training clip (`generator_latent_frames` of them encoded)."""
        return first_video_frame(self.generator_latent_frames)

    @property
    def vae_video_frames(self) -> int:
        return first_video_frame(self.vae_latent_frames)

    def steps(self, stage_steps: int) -> int:
        return stage_steps if self.max_steps is None else min(stage_steps, self.max_steps)


@dataclass
class DemoModels:
    generator: CausalWanModel
    vae: torch.nn.Module  # AutoencoderKLWan
    text_encoder: UMT5EncoderModel
    tokenizer: PreTrainedTokenizerBase
    preset: ModelPreset


def build_models(cfg: TrainConfig, device: torch.device) -> DemoModels:
    """The three networks at the preset's size with seeded random weights, in float32 on `device`."""
    preset = PRESETS[cfg.model_name]
    torch.manual_seed(cfg.seed)
    vae = build_vae(preset.vae)
    generator = CausalWanModel(preset.generator)
    init_random_weights(generator)
    text_encoder = UMT5EncoderModel(umt5_config(preset.text_encoder))
    return DemoModels(generator.to(device), vae.to(device), text_encoder.to(device), byte_level_tokenizer(), preset)


def loader(
    world: DemoWorld, batch_size: int, steps: int, cfg: TrainConfig, jitter: ContextJitter | None = None
) -> Iterable[tuple[torch.Tensor, list]]:
    """Batches of items 0, 1, 2, ... in order, rendered by `cfg.workers` processes ahead of the GPU (with
    `jitter`, some clips' first blocks hurried or slowed: `ContextJitter`)."""
    dataset = (_SwitchItems if world.change_frames is not None else _Items)(world, batch_size * steps, jitter)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, num_workers=cfg.workers, persistent_workers=cfg.workers > 0
    )


def first_video_frame(latent_frame: int) -> int:
    """The video frame latent frame m >= 1 starts at, s*(m-1)+1 (4m-3: the causal VAE encodes frame 0 alone, then
    VAE_STRIDE frames a latent frame); as a count, the video frames that m latent frames decode to, as
    `Geometry.video_frames_for_latents` counts them for an inference config."""
    return VAE_STRIDE * (latent_frame - 1) + 1


# `ContextJitter`'s random streams per clip, apart from the world's own (which draws the clip): the context's
# length, speed and offset, and `turn_creep`'s draw, so that adding one never changes the other.
CONTEXT_DRAWS, TURN_DRAWS = 1, 2


@dataclass(frozen=True)
class ContextJitter:
    """`context_speed_jitter`: which clips of a world get a context at another speed, how long and how fast,
    a pure function of the world's seed and the clip's index (the bank's renderer and the training step, which
    masks the loss there, agree without passing anything along)."""

    seed: int
    latent_frames: int  # of a clip
    block: int  # latent frames per block: a context is whole blocks, as the KV cache holds them
    jitter: float
    prob: float
    offset_px: float = 0.0  # `context_offset_px`
    # `context_creep`: latent frames at a clip's start that a shifted context leaves true (the sinks), the
    # offset creeping in after them; 0: the whole context shifted alike. Above 0 every context, hurried ones
    # too, is at least one block longer than those frames.
    creep_after: int = 0
    # `turn_creep`: the share of shifted contexts past a change of direction that creep from the change along
    # the old axis (`turn_offset`); `turn_jump`: off by the whole offset from the change on instead.
    turn_creep: float = 0.0
    turn_jump: bool = False

    @property
    def sinks_end(self) -> int | None:
        """The video frame a creep from the sinks starts at (`creep_after`'s first frame after them); None: no
        creep, the whole context shifted alike."""
        return first_video_frame(self.creep_after) if self.creep_after else None

    def context(self, index: int) -> tuple[int, float, tuple[float, float]] | None:
        """(latent frames of context, speed factor, offset (y, x) in px) for clip `index`, or None."""
        rng = np.random.default_rng([self.seed, index, CONTEXT_DRAWS])
        blocks = self.latent_frames // self.block
        fewest = math.ceil(self.creep_after / self.block) + 1  # blocks: a creep needs one after the true frames
        if (self.jitter <= 0 and self.offset_px <= 0) or blocks < 1 + fewest or rng.random() >= self.prob:
            return None
        latent_frames = self.block * int(rng.integers(fewest, blocks))
        factor = float(1 + rng.uniform(-self.jitter, self.jitter)) if self.jitter > 0 else 1.0
        offset = rng.uniform(-self.offset_px, self.offset_px, size=2) if self.offset_px > 0 else np.zeros(2)
        return latent_frames, factor, (float(offset[0]), float(offset[1]))

    def apply(self, clip: Clip, index: int) -> tuple[torch.Tensor, int]:
        """The clip's video with its context hurried or shifted, and the context's latent frames (0: left as it
        was)."""
        chosen = self.context(index)
        if chosen is None:
            return clip.video, 0
        latent_frames, factor, offset = chosen
        frames = first_video_frame(latent_frames)
        video = hurried_context(clip, frames, factor) if factor != 1 else None
        if video is None and self.offset_px > 0:  # no straight run at another speed fits: shifted alone
            turn = self.turn_offset(clip, index, frames)
            creep_from, offset = turn or (self.sinks_end, offset)
            video = shifted_context(clip, frames, offset, creep_from, jump=self.turn_jump and turn is not None)
        return (clip.video, 0) if video is None else (video, latent_frames)

    def turn_offset(self, clip: Clip, index: int, frames: int) -> tuple[int, tuple[float, float]] | None:
        """(creep_from, offset) of a context of `frames` video frames that creeps from `clip`'s change of direction
        along the axis the shape moved on just before it, up to `offset_px` either way; None where the clip has
        no such change a latent frame or more before the context ends, or the draw (`turn_creep`) says no.

        A reversal (at the first generated block, where the world allows one) counts as a turn too: its creep
        runs along its path, an error of phase that shifted contexts show anyway. A change inside the sinks
        (`creep_after`) creeps from after them, which stay true. With `turn_jump` the whole offset comes at
        creep_from: at the turn, or at the sinks' end for a change inside them."""
        change = clip.change
        if self.turn_creep <= 0 or change is None or change.direction is None or change.frame + VAE_STRIDE > frames:
            return None
        rng = np.random.default_rng([self.seed, index, TURN_DRAWS])
        if rng.random() >= self.turn_creep:
            return None
        vy, vx = clip.trajectory()[change.frame - 1].velocity  # the last frame before the change
        along = float(rng.uniform(-self.offset_px, self.offset_px))
        creep_from = max(change.frame, self.sinks_end or 0)
        return creep_from, ((along, 0.0) if abs(vy) > abs(vx) else (0.0, along))

    def context_frames(self, indices: Sequence[int], clips: DemoWorld) -> torch.Tensor:
        """Each clip's hurried or shifted latent frames [B] (0 where none), as `apply` made them, from the clips'
        stories (nothing rendered)."""
        counts = []
        for index in indices:
            chosen = self.context(index)
            if chosen is not None and self.offset_px <= 0:  # hurried alone: where its straight run fits
                frames = first_video_frame(chosen[0])
                start = hurried_start(*clips.story(index), frames, chosen[1], clips.height, clips.width)
                chosen = None if start is None else chosen
            counts.append(0 if chosen is None else chosen[0])
        return torch.tensor(counts)


def context_jitter(cfg: TrainConfig, clips: DemoWorld) -> ContextJitter | None:
    """The run's `ContextJitter` for the generator's world `clips` (None without `context_speed_jitter` or
    `context_offset_px`)."""
    if cfg.context_speed_jitter <= 0 and cfg.context_offset_px <= 0:
        return None
    latent_frames = (clips.num_frames + 3) // 4
    return ContextJitter(
        clips.seed,
        latent_frames,
        cfg.frames_per_block,
        cfg.context_speed_jitter,
        cfg.context_jitter_prob,
        cfg.context_offset_px,
        cfg.sink_size if cfg.context_creep else 0,
        cfg.turn_creep,
        cfg.turn_jump,
    )


class _Items(torch.utils.data.Dataset):
    def __init__(self, world: DemoWorld, length: int, jitter: ContextJitter | None = None) -> None:
        self.world, self.length, self.jitter = world, length, jitter

    def __len__(self) -> int:
        return self.length

    def video(self, clip: Clip, index: int) -> torch.Tensor:
        return clip.video if self.jitter is None else self.jitter.apply(clip, index)[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        if self.jitter is None:
            return self.world[index]
        clip = self.world.clip(index)
        return self.video(clip, index), clip.prompt2


def world(
    cfg: TrainConfig,
    stream: int,
    num_frames: int | None = None,
    change_frames: Sequence[int] | None = None,
    change_weights: Sequence[float] | None = None,
) -> DemoWorld:
    """The run's clips (`num_frames` video frames, default the generator's clip length); stage 1 and
    stage 2 read different streams of the same seed. A change clip changes at video frame
    `first_video_frame(change_latent_frame)`, or at one of `change_frames` drawn per clip."""
    return DemoWorld(
        seed=cfg.seed * 1000 + stream,
        num_frames=num_frames or cfg.num_video_frames,
        height=cfg.height,
        width=cfg.width,
        change_prob=cfg.change_prob,
        change_frame=first_video_frame(cfg.change_latent_frame),
        change_frames=change_frames,
        change_weights=change_weights,
    )


def switch_world(cfg: TrainConfig, stream: int) -> DemoWorld:
    """The generator's clips under `switch_anywhere`: a change clip changes at the first video frame of a
    random block after the first (latent frame s >= frames_per_block starts at video frame 4s - 3)."""
    frames = cfg.generator_latent_frames
    starts = [first_video_frame(s) for s in range(cfg.frames_per_block, frames, cfg.frames_per_block)]
    if not starts:
        raise SystemExit(f"--switch_anywhere: clips of {frames} latent frames have no block after the first")
    weights = switch_weights(cfg, starts)
    return world(cfg, stream, cfg.generator_video_frames, change_frames=starts, change_weights=weights)


def decoder_world(cfg: TrainConfig) -> DemoWorld:
    """The decoder stage's clips, a stream of their own: generator-length clips changing at
    change_latent_frame, or with `switch_anywhere` at any block boundary (`switch_world`, clips of
    `generator_latent_frames`). A change late in a long clip is one the causal decoder meets with a long past
    behind it: after 80 latent frames of a blue triangle, the demo VAE's round trip of a switch to red showed
    green for 20 frames, where the same switch at frame 9 came back red at once (issue 19, seed 6029, CPU)."""
    return switch_world(cfg, DECODER_STREAM) if cfg.switch_anywhere else world(cfg, stream=DECODER_STREAM)


def switch_weights(cfg: TrainConfig, starts: Sequence[int]) -> list[float] | None:
    """How often a change clip of `switch_world` switches at each of `starts`: `first_switch_share` at the
    video-conditional switch (change_latent_frame), the rest evenly; None (evenly) when the share is 0."""
    if cfg.first_switch_share == 0:
        return None
    first = first_video_frame(cfg.change_latent_frame)
    if first not in starts or len(starts) == 1:
        raise SystemExit(f"--first_switch_share: clips switching at {starts} have no first switch and later ones")
    rest = (1 - cfg.first_switch_share) / (len(starts) - 1)
    return [cfg.first_switch_share if start == first else rest for start in starts]


class Captions(NamedTuple):
    """A switch clip's prompts: latent frames before `change` show prompt1's scene, the rest prompt2's."""

    prompt1: str
    prompt2: str
    change: int  # latent frame where the content (and the prompt) changes; the clip length when none


class _SwitchItems(_Items):
    """(video, Captions) of each clip of a `switch_world`."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Captions]:
        clip = self.world.clip(index)
        latent_frames = (self.world.num_frames + 3) // 4
        change = latent_frames if clip.change is None else (clip.change.frame + 3) // 4
        return self.video(clip, index), Captions(clip.prompt1, clip.prompt2, change)


# ----------------------------------------------------------------------------------------------
# Stage 1: the VAE.
# ----------------------------------------------------------------------------------------------


def vae_loss(
    vae,
    videos: torch.Tensor,
    kl_weight: float,
    generator: torch.Generator | None = None,
    foreground_weight: float = 0.0,
    first_frame_weight: float = 1.0,
    mean: bool = False,
) -> torch.Tensor:
    """Reconstruction MSE of videos [B, 3, N, H, W] through a sampled latent (the posterior's mean with
    `mean`), plus `kl_weight` x KL.

    Pixels off the plain background count `1 + foreground_weight` times: the shape covers a few percent
    of a frame, and a plain MSE is content to paint it a blurry grey (measured: red came back grey-brown).
    Frame 0's pixels count `first_frame_weight` times more: it is one frame of N, yet the causal VAE
    encodes and decodes it alone, through paths no later frame takes.
    """
    posterior = vae.encode(videos).latent_dist
    latents = posterior.mode() if mean else posterior.sample(generator=generator)  # [B, C, F, h, w]
    reconstruction = vae.decode(latents).sample  # [B, 3, N, H, W]
    foreground = foreground_mask(videos).unsqueeze(1)  # [B, 1, N, H, W]: the shape's pixels
    weight = 1 + foreground_weight * foreground.to(videos.dtype)
    if first_frame_weight != 1.0:  # (1: the weights, and so the loss, exactly as before the option)
        weight[:, :, 0] *= first_frame_weight
    error = (reconstruction.float() - videos).pow(2) * weight
    return error.sum() / (weight.sum() * videos.shape[1]) + kl_weight * posterior.kl().mean()


@torch.no_grad()
def set_latent_stats(vae, videos: torch.Tensor) -> None:
    """Store the per-channel mean and std of the latents (posterior modes) of `videos` in the VAE's config."""
    latents = vae.encode(videos).latent_dist.mode().float()  # [B, C, F, h, w]
    mean = latents.mean(dim=(0, 2, 3, 4))
    std = latents.std(dim=(0, 2, 3, 4)).clamp(min=1e-3)
    vae.register_to_config(latents_mean=mean.tolist(), latents_std=std.tolist())


# ----------------------------------------------------------------------------------------------
# Stage 2: the generator, by diffusion forcing.
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def encode_latents(vae, videos: torch.Tensor, groups_per_call: int = 1) -> torch.Tensor:
    """Videos [B, 3, N, H, W] -> normalised latents [B, F, C, h, w], exactly as the pipeline encodes (in the
    VAE's dtype, autocast off; `groups_per_call` groups of frames at a time after the first, as
    `StreamingVAE.encode`)."""
    with torch.autocast(videos.device.type, enabled=False):
        return StreamingVAE(vae).encode(videos, groups_per_call)


def latent_bank(vae, clips: DemoWorld, size: int, cfg: TrainConfig, device: torch.device) -> tuple[torch.Tensor, list]:
    """The first `size` clips of `clips` encoded once: latents [size, F, C, h, w] on `device`, and captions
    (strings, or `Captions` for a `switch_world`).

    The causal VAE encodes chunk by chunk, a launch-bound loop: encoding each step's batch cost most of a
    step on the GPU, while encoding a few hundred clips at a time costs about as much as a few."""
    latents, captions, jitter = [], [], context_jitter(cfg, clips)
    steps = -(-size // cfg.encode_batch_size)
    for videos, batch_captions in loader(clips, cfg.encode_batch_size, steps, cfg, jitter):
        latents.append(encode_latents(vae, videos.to(device)))
        if isinstance(batch_captions, Captions):  # collated field by field: back to one Captions per clip
            batch_captions = [Captions(a, b, int(c)) for a, b, c in zip(*batch_captions, strict=True)]
        captions.extend(batch_captions)
    return torch.cat(latents)[:size], captions[:size]


class Batch(NamedTuple):
    """One generator step's clips: latents [B, F, C, h, w], captions (strings or `Captions`), and the clips'
    indices in the run's `DemoWorld` (`DemoWorld.story(i)` is deterministic: their scenes, for
    `consistent_targets`; None where the batch does not come from a bank)."""

    latents: torch.Tensor
    captions: list
    clips: list[int] | None = None


def bank_batches(latents: torch.Tensor, captions: Sequence, batch_size: int, seed: int) -> Iterator[Batch]:
    """Endless shuffled `Batch`es of a bank (clip i of the bank is clip i of its world), a new order every epoch."""
    order = torch.Generator().manual_seed(seed)
    while True:
        for index in torch.randperm(len(captions), generator=order).split(batch_size):
            if len(index) == batch_size:
                yield Batch(latents[index.to(latents.device)], [captions[i] for i in index], index.tolist())


def encode_text(
    text_encoder: UMT5EncoderModel, tokenizer: PreTrainedTokenizerBase, captions: Sequence[str], text_len: int
) -> torch.Tensor:
    """Captions -> embeddings [B, text_len, d_model], exactly as `PromptEncoder` embeds a prompt."""
    return embed_prompts(tokenizer, text_encoder, list(captions), text_len)


def block_sizes(cfg: TrainConfig, num_frames: int) -> list[int]:
    """`num_frames` latent frames cut into blocks of `frames_per_block` (the last one shorter)."""
    sizes = [cfg.frames_per_block] * (num_frames // cfg.frames_per_block)
    return sizes + ([num_frames % cfg.frames_per_block] if num_frames % cfg.frames_per_block else [])


def block_mask(cfg: TrainConfig, num_frames: int) -> torch.Tensor:
    """The inference visibility [F, F] for `num_frames` latent frames rolled out in blocks."""
    sizes = block_sizes(cfg, num_frames)
    if cfg.local_attn_size == -1:
        return frame_visibility_mask(sizes, num_frames, 0)
    return frame_visibility_mask(sizes, cfg.local_attn_size, cfg.sink_size)


def window_positions(cfg: TrainConfig, num_frames: int) -> FramePositions:
    """The window-relative RoPE positions [`use_infinite_attention`] each block of a rollout of `num_frames`
    latent frames has at inference, for one full-sequence forward under `block_mask`.

    Read from the engine's own `KVCache` bookkeeping (a one-token cache, begun block by block as the
    pipeline does), so the rule is the engine's: keys are listed in frame order, a frame the cache no
    longer holds gets position 0, where the mask hides it anyway.
    """
    if cfg.local_attn_size == -1:
        raise SystemExit("--infinite_attention needs a rolling window: set --local_attn_size (not -1)")
    cache = KVCache(
        num_layers=1,
        batch_size=1,
        frame_tokens=1,
        cache_frames=cfg.local_attn_size,
        sink_frames=cfg.sink_size,
        num_heads=1,
        head_dim=1,
        dtype=torch.float32,
        device="cpu",
        window_rope=True,
    )
    sizes, queries, keys, start = block_sizes(cfg, num_frames), [], [], 0
    for size in sizes:
        cache.begin_block(start, size)
        held = dict(zip(cache.slot_frames, cache.frame_positions.keys[0], strict=False))  # frame -> position
        queries += cache.frame_positions.queries
        keys.append([held.get(frame, 0) for frame in range(num_frames)])
        start += size
    return FramePositions(queries, keys, sizes)


def attention_layout(cfg: TrainConfig, num_frames: int) -> dict:
    """The generator's attention arguments for a training clip: the inference mask, and under
    `infinite_attention` the positions the KV cache gives (absolute positions otherwise, as at inference)."""
    layout: dict = {"frame_mask": block_mask(cfg, num_frames)}
    if cfg.infinite_attention:
        layout["frame_positions"] = window_positions(cfg, num_frames)
    return layout


RECACHE_CHOICES = ("longlive", "window", "none")


def recache_span(cfg: TrainConfig, change: int) -> range:
    """The latent frames the engine reruns under prompt2 at a prompt switch before frame `change`.

    The rule is the engine's own (`KVCache.start_recache` of a one-token cache that has rolled out to
    `change` block by block, `switch_recache` as `recache_mode`, sinks global as in the demo config), except
    at `change_latent_frame`, the first generated frame of a video-conditional run, whose switch no
    recache follows (`recache_conditioning` off); `switch_recache` none never recaches."""
    if cfg.switch_recache == "none" or change == cfg.change_latent_frame or change <= 0:
        return range(change, change)
    cache = KVCache(
        num_layers=1,
        batch_size=1,
        frame_tokens=1,
        cache_frames=cfg.local_attn_size if cfg.local_attn_size != -1 else change,
        sink_frames=cfg.sink_size,
        num_heads=1,
        head_dim=1,
        dtype=torch.float32,
        device="cpu",
    )
    start = 0
    for size in block_sizes(cfg, change):
        cache.begin_block(start, size)
        start += size
    return cache.start_recache(cfg.switch_recache, global_sink=True)


@dataclass
class PromptSwitch:
    """A batch's prompt switches (`--switch_anywhere`), as the engine shows them at inference.

    Clip b's frames from `text_from[b]` on attend to prompt2 (`second`), the earlier ones to prompt1.
    Its content changes at `change[b]`; the frames [text_from[b], change[b]) are the window the engine
    recaches at the switch (`recache_span`): their keys and values are recomputed under prompt2 from
    their clean latents and seen so by every later block, so in training they are clean (t = 0) and
    under prompt2, context only (no loss: at inference nothing is generated from them). One forward
    cannot also show the pre-switch blocks those frames under prompt1, which the engine did before the
    switch; those blocks see a clean, prompt2 copy of their recent past instead, the price of one pass.
    """

    second: torch.Tensor  # [B, L, D]: prompt2's text embeddings
    text_from: torch.Tensor  # [B] long
    change: torch.Tensor  # [B] long

    @classmethod
    def of(cls, cfg: TrainConfig, second: torch.Tensor, captions: Sequence[Captions]) -> PromptSwitch:
        rule = {change: recache_span(cfg, change) for change in {c.change for c in captions}}  # one per frame
        # A clip without a change (one prompt, `change` its length) switches nothing: no recache either.
        spans = [rule[c.change] if c.prompt2 != c.prompt1 else range(c.change, c.change) for c in captions]
        return cls(
            second,
            torch.tensor([span.start for span in spans]),
            torch.tensor([c.change for c in captions]),
        )

    def after(self, frames: int) -> torch.Tensor:
        """[B, F] bool: True where a frame attends to prompt2."""
        return torch.arange(frames)[None] >= self.text_from[:, None]

    def recached(self, frames: int) -> torch.Tensor:
        """[B, F] bool: the frames recached at the switch (clean, prompt2, no loss)."""
        index = torch.arange(frames)[None]
        return (index >= self.text_from[:, None]) & (index < self.change[:, None])


def per_frame_text(
    generator: CausalWanModel, first: torch.Tensor, second: torch.Tensor, after: torch.Tensor
) -> CrossAttentionCache:
    """Cross-attention K/V [B*F, L, H, D] giving frame f of clip b prompt2 (`second` [B, L, D]) where
    `after` [B, F] is True, prompt1 (`first`) elsewhere: each prompt is projected once, then gathered."""
    batch, frames = after.shape
    both = generator.prepare_text(torch.cat([first, second]))  # keys [2B, L, H, D]: prompt1s, then prompt2s
    rows = (torch.arange(batch)[:, None] + batch * after.long()).flatten().to(first.device)  # [B*F]
    return CrossAttentionCache([k[rows] for k in both.keys], [v[rows] for v in both.values])


def sample_timesteps(cfg: TrainConfig, batch: int, frames: int, generator: torch.Generator) -> torch.Tensor:
    """Timesteps [B, F]: each frame's own level on the shifted grid; some clips get clean leading blocks."""
    grid = shifted_sigmas(cfg.timestep_shift) * NUM_TRAIN_TIMESTEPS  # [1000], the training grid
    timesteps = grid[torch.randint(0, len(grid), (batch, frames), generator=generator)]
    blocks = -(-frames // cfg.frames_per_block)
    for b in range(batch):
        if blocks > 1 and torch.rand((), generator=generator) < cfg.clean_context_prob:
            clean_blocks = int(torch.randint(1, blocks, (), generator=generator))
            timesteps[b, : clean_blocks * cfg.frames_per_block] = 0.0
    return timesteps


def diffusion_forcing_loss(
    generator: CausalWanModel,
    latents: torch.Tensor,
    text_embeddings: torch.Tensor,
    cfg: TrainConfig,
    rng: torch.Generator,
    switch: PromptSwitch | None = None,
    context_frames: int | torch.Tensor = 0,
    background: torch.Tensor | None = None,
) -> torch.Tensor:
    """Flow-matching loss of one block-causal full-sequence forward.

    latents [B, F, C, h, w] clean (x0); text_embeddings [B, L, D] (prompt1's under a `switch`). x_t =
    (1 - s) x0 + s eps with s = t / 1000 per frame; the network predicts v = eps - x0. Clean frames
    (t = 0) are context only; so are the first `context_frames` (a `rollout_context`'s; or per clip [B], a
    `ContextJitter`'s). With `background`
    (`background_latents`) each latent position weighs as `latent_foreground_weights` says.
    """
    batch, frames = latents.shape[:2]
    timesteps = sample_timesteps(cfg, batch, frames, rng)  # [B, F]
    if switch is not None:
        timesteps = timesteps.masked_fill(switch.recached(frames), 0.0)
    context = torch.as_tensor(context_frames).expand(batch)  # one count for all clips, or one each
    timesteps = timesteps.masked_fill(torch.arange(frames)[None] < context[:, None], 0.0)
    timesteps = timesteps.to(latents.device)
    noise = torch.randn(latents.shape, generator=rng).to(latents.device)
    sigma = (timesteps / NUM_TRAIN_TIMESTEPS).view(batch, frames, 1, 1, 1)
    noisy = (1 - sigma) * latents + sigma * noise
    text = clip_text(generator, text_embeddings, switch, frames)
    flow = generator(noisy, timesteps, text, **attention_layout(cfg, frames))  # [B, F, C, h, w]
    if background is None:
        per_frame = (flow - (noise - latents)).pow(2).mean(dim=(2, 3, 4))  # [B, F]
    else:
        squared = (flow - (noise - latents)).pow(2).mean(dim=2)  # [B, F, h, w]
        where = latent_foreground_weights(latents, background, cfg.latent_foreground_weight)
        per_frame = (squared * where).sum(dim=(2, 3)) / where.sum(dim=(2, 3))
    weight = (timesteps > 0).float()
    return (per_frame * weight).sum() / weight.sum().clamp(min=1)


def latent_foreground_weights(latents: torch.Tensor, background: torch.Tensor, weight: float) -> torch.Tensor:
    """Per latent position [B, F, h, w] of clean `latents` [B, F, C, h, w]: 1 where they equal `background`
    (the latents of a clip of the world's background alone, `background_latents`: the VAE's latent of an empty
    frame varies with the position and frame 0 differs), rising to `weight` with the distance from it,
    relative to the frame's largest. Made from the clean target alone, so every noise level weighs the
    same places."""
    distance = (latents - background[:, : latents.shape[1]]).norm(dim=2)  # [B, F, h, w]
    scale = distance.flatten(2).amax(dim=2).clamp(min=1e-6)[..., None, None]
    return 1 + (weight - 1) * distance / scale


@torch.no_grad()
def background_latents(vae, cfg: TrainConfig, device: torch.device) -> torch.Tensor:
    """[1, F, C, h, w]: a generator clip's worth of the world's empty background, encoded as the bank is."""
    colour = torch.tensor(BACKGROUND, dtype=torch.float32, device=device) / 127.5 - 1
    shape = (1, 3, cfg.generator_video_frames, cfg.height, cfg.width)
    return encode_latents(vae, colour.view(1, 3, 1, 1, 1).expand(shape))


def clip_text(
    generator: CausalWanModel, text_embeddings: torch.Tensor, switch: PromptSwitch | None, frames: int
) -> CrossAttentionCache:
    """The cross-attention K/V of a batch's first `frames` latent frames: one prompt per clip, or under a
    `switch` each frame's own (`per_frame_text`)."""
    if switch is None:
        return generator.prepare_text(text_embeddings)
    return per_frame_text(generator, text_embeddings, switch.second, switch.after(frames))


@torch.no_grad()
def rollout_context(
    generator: CausalWanModel,
    latents: torch.Tensor,
    text_embeddings: torch.Tensor,
    cfg: TrainConfig,
    blocks: int,
    rng: torch.Generator,
    switch: PromptSwitch | None = None,
) -> torch.Tensor:
    """`latents` [B, F, C, h, w] with blocks 1..`blocks`-1 replaced by the generator's own samples.

    Block 0 stays (the conditioning frames of a video-conditional run, here the clip's own); each later
    block is sampled as the engine samples it (`VideoConditionalPipeline._denoise_block`): the sampler's
    warped steps from pure noise, fresh noise drawn from `rng` in the same order, each step a forward of
    the frames so far under the inference mask with the earlier blocks clean (t = 0), which is what the KV
    cache holds for them. Trained on afterwards (`--rollout_prob`), the later blocks are predicted from
    the model's own outputs, as in a long rollout, instead of from true frames it never sees at inference.
    """
    sampler = FlowMatchSampler(cfg.denoising_steps, cfg.timestep_shift)
    sizes = block_sizes(cfg, latents.shape[1])
    out = latents.clone()
    start = sizes[0]
    for size in sizes[1:blocks]:
        end = start + size
        text, layout = clip_text(generator, text_embeddings, switch, end), attention_layout(cfg, end)
        shape = (latents.shape[0], size, *latents.shape[2:])
        noisy = torch.randn(shape, generator=rng).to(latents.device)
        timesteps = torch.zeros(latents.shape[0], end, device=latents.device)  # the earlier blocks clean
        for step, timestep in enumerate(sampler.timesteps):
            timesteps[:, start:] = timestep
            flow = generator(torch.cat([out[:, :start], noisy.to(out.dtype)], dim=1), timesteps, text, **layout)
            clean = sampler.predict_clean(noisy, flow[:, start:], timestep)
            if step + 1 < len(sampler.timesteps):
                fresh = torch.randn(shape, generator=rng).to(latents.device)
                noisy = sampler.add_noise(clean, fresh, sampler.timesteps[step + 1])
        out[:, start:end] = clean.to(out.dtype)
        start = end
    return out


def rollout_blocks(cfg: TrainConfig, frames: int, rng: torch.Generator) -> int:
    """How many leading blocks of a clip of `frames` latent frames a rollout step makes context (block 0
    and k-1 sampled ones): uniform over 2..blocks-1, so at least one true block is left to learn."""
    blocks = len(block_sizes(cfg, frames))
    return int(torch.randint(2, blocks, (), generator=rng))


ROLLOUT_TARGETS = ("true", "consistent")


def shifted_continuation(
    scene: Scene,
    change: Change | None,
    num_frames: int,
    height: int,
    width: int,
    offset: Sequence[float],
    last: int,
) -> list[Scene]:
    """The shape's state at each of a clip's `num_frames` video frames: the true ones (`trajectory`) up to
    video frame `last` (the context's last); from there its true state (colour, velocity, size) moved by
    `offset` (dy, dx) px, kept inside the frame, and continued by the world's physics (walls, the clip's
    change if it comes later)."""
    true = trajectory(scene, last + 1, height, width, change)
    state = true[last]
    half = state.size / 2
    position = (
        min(max(state.position[0] + offset[0], half), height - half),
        min(max(state.position[1] + offset[1], half), width - half),
    )
    # A change at or before `last` is already in `state` (its colour and velocity); a later one comes later.
    if change is not None:
        change = None if change.frame <= last else replace(change, frame=change.frame - last)
    return true + trajectory(replace(state, position=position), num_frames - last, height, width, change)[1:]


# `consistent_targets` decodes only the context's last CONTEXT_DECODE_LATENTS latent frames (the first of them
# as a first chunk, from a cold decoder cache) and encodes the re-rendered clip from TARGET_WARMUP_LATENTS
# latent frames before the context's end (cold encoder cache) instead of whole: what the causal VAE's caches
# carry from older frames has faded by then. Measured on the shipped demo VAE, 36-latent-frame clips
# (scripts/experiments/consistent_targets_cost.py): the last context frame's centroid moves by at most
# 0.034 px decoding 22 latent frames (32 true and 16 generator-sampled contexts; 20: 0.15 px, 18: 0.27,
# 12: 1.0, 6: 1.2, 1: 32); targets encoded after a warm-up of 9 latent frames are within 1.4% (relative L2,
# 0.4% mean) of the whole encode's and decode 0.14 px apart at most, the colour never, far inside the VAE's
# own round trip (0.65 px mean, 3.6 at most, 113 of 768 frames in another colour; a warm-up of 6: 7%,
# 0.31 px, 3 frames' colour; 12: 0.15%, 0.05 px). The decoder's reach is long: it saves contexts of 24-33
# latent frames only.
CONTEXT_DECODE_LATENTS = 22
TARGET_WARMUP_LATENTS = 9
# Latent frames per VAE call after a video's first, on a GPU (`StreamingVAE` encode/decode): one a call is
# launch-bound there (1.8 s a rollout step at batch 64); the same frames in fewer calls. On a CPU (1 thread)
# larger calls measured up to a third slower (4 and all latent frames a call: decode 11% and 34%), so one.
VAE_PER_CALL = 8


@torch.no_grad()
def context_end_frames(
    vae, sampled: torch.Tensor, context_frames: int, decode_latents: int | None, latents_per_call: int = 1
) -> torch.Tensor:
    """The last video frame [B, 3, H, W] of the first `context_frames` latent frames of `sampled`
    [B, F, C, h, w], decoded as `StreamingVAE` decodes (`latents_per_call` at a time after the first): from
    the start (`decode_latents` None, the reference) or from only the last `decode_latents` latent frames
    through a cold cache."""
    start = 0 if decode_latents is None else max(0, context_frames - decode_latents)
    with torch.autocast(sampled.device.type, enabled=False):
        streaming = StreamingVAE(vae)
        return streaming.decode(sampled[:, start:context_frames].float(), latents_per_call)[:, :, -1]


def warmup_start(context_frames: int, warmup_latents: int | None, stride: int) -> int:
    """The video frame a cold encode starts at so that its latents after `warmup_latents` line up with a
    whole clip's: the last frame of latent frame `context_frames - warmup_latents` (encoded alone, as a
    first frame); 0 (the whole clip, the reference) for None or a warm-up reaching the clip's start."""
    if warmup_latents is None or warmup_latents >= context_frames:
        return 0
    return stride * (context_frames - warmup_latents)


@torch.no_grad()
def consistent_targets(
    vae,
    sampled: torch.Tensor,
    context_frames: int,
    stories: Sequence[tuple[Scene, Change | None]],
    decode_latents: int | None = CONTEXT_DECODE_LATENTS,
    warmup_latents: int | None = TARGET_WARMUP_LATENTS,
    per_call: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`sampled` [B, F, C, h, w] (a `rollout_context`: its first `context_frames` sampled, the rest the
    clips' true latents) with the later frames replaced by latents that continue from the sampled context.

    The sampled context's last frame is decoded as the pipeline decodes it (`context_end_frames`, from its
    last `decode_latents` latent frames) and the shape's centroid there compared with the true clip's
    (`stories`: each clip's scene and change, `DemoWorld.story`); clip b is then re-rendered with its shape
    moved by that offset (`shifted_continuation`; drawn on the CPU, painted on the latents' device) from
    `warmup_latents` latent frames before the context's end on, and encoded as the bank is (`encode_latents`).
    None for either is the reference: the whole context decoded, the whole clip encoded. `per_call` latent
    frames go through the VAE per call (after a video's first; see `VAE_PER_CALL`). A clip whose
    sampled last frame shows no shape keeps its true later latents. Returns (latents, found [B] bool).
    """
    stride = vae.config.scale_factor_temporal
    last, num_frames = stride * (context_frames - 1), stride * (sampled.shape[1] - 1) + 1  # video frames
    decoded = context_end_frames(vae, sampled, context_frames, decode_latents, per_call)  # [B, 3, H, W]
    height, width = decoded.shape[-2:]
    model_at = foreground_centroid(decoded.float().cpu().transpose(0, 1))  # [B, 2]: the clips as frames
    truths = [trajectory(scene, last + 1, height, width, change)[last] for scene, change in stories]
    true_at = torch.cat([foreground_centroid(paint(*rasterize([state], height, width))) for state in truths])
    offsets = model_at - true_at  # [B, 2]
    found = ~offsets.isnan().any(1)  # [B]
    out = sampled.clone()
    rows = found.nonzero().flatten().tolist()
    if rows:
        start = warmup_start(context_frames, warmup_latents, stride)
        states = [
            shifted_continuation(*stories[b], num_frames, height, width, offsets[b].tolist(), last)[start:]
            for b in rows
        ]
        drawn = [rasterize(clip, height, width) for clip in states]
        masks, colours = (torch.stack(parts) for parts in zip(*drawn, strict=True))  # [R, N', H, W], [R, N', 3]
        videos = paint(masks.to(sampled.device), colours)  # [R, 3, N', H, W]
        encoded = encode_latents(vae, videos, per_call)  # [R, F', C, h, w]: a cold encode of the clips' tails
        out[rows, context_frames:] = encoded[:, context_frames - sampled.shape[1] :].to(out.dtype)
    return out, found


# ----------------------------------------------------------------------------------------------
# The loops.
# ----------------------------------------------------------------------------------------------


def train_vae(
    models: DemoModels,
    cfg: TrainConfig,
    batches: Iterable[torch.Tensor],
    device: torch.device,
    stats_videos: torch.Tensor,
) -> list[float]:
    """Stage 1: `cfg.steps(vae_steps)` AdamW steps, one per batch of videos [B, 3, N, H, W] from
    `batches`; then the latent statistics, measured on `stats_videos`."""
    vae = models.vae.requires_grad_(True)
    losses = _fit_vae(vae, list(vae.parameters()), batches, cfg, device, "vae", cfg.steps(cfg.vae_steps))
    set_latent_stats(vae, stats_videos.to(device))
    return losses


def train_decoder(
    models: DemoModels, cfg: TrainConfig, batches: Iterable[torch.Tensor], device: torch.device
) -> list[float]:
    """Stage 1b: the VAE decoder alone on generator-length clips, the encoder frozen.

    The causal VAE carries state from chunk to chunk; trained on 13-frame clips, it lost the shape's
    colour from about frame 15 on (measured: a round trip of 45-frame clips kept the colour in a quarter
    of frames 25-45). The generator's latents come from the encoder, so freezing it (and the latent
    statistics) keeps the trained generator valid while the decoder learns to read late frames.
    `first_frame_weight` weighs video frame 0 up and `decoder_mean` decodes the posterior mean, as
    inference does (issue 19: frame 0 came back in the wrong colour in a fifth of clips, its latent still
    telling the colours apart)."""
    vae = models.vae.requires_grad_(False)
    params = [*vae.post_quant_conv.parameters(), *vae.decoder.parameters()]
    for param in params:
        param.requires_grad_(True)
    # The KL term depends on the frozen encoder alone: weight 0.
    total = cfg.steps(cfg.decoder_steps)
    return _fit_vae(vae, params, batches, cfg, device, "decoder", total, 0.0, cfg.first_frame_weight, cfg.decoder_mean)


def _fit_vae(
    vae,
    params: list[torch.nn.Parameter],
    batches: Iterable[torch.Tensor],
    cfg: TrainConfig,
    device: torch.device,
    stage: str,
    total: int,
    kl_weight: float | None = None,
    first_frame_weight: float = 1.0,
    mean: bool = False,
) -> list[float]:
    """AdamW on `params` by `vae_loss` (KL weight `cfg.kl_weight` unless given; `first_frame_weight` and
    `mean` as there), one step per batch of videos [B, 3, N, H, W]; leaves `vae` in eval."""
    kl_weight = cfg.kl_weight if kl_weight is None else kl_weight
    vae.train()
    optimizer = torch.optim.AdamW(params, lr=cfg.vae_lr, weight_decay=0.0)
    schedule = warmed_up(optimizer, cfg, from_trained=cfg.stage == "decoder")  # not the decoder after vae in `all`
    rng = torch.Generator(device).manual_seed(cfg.seed)
    losses, start = [], time.perf_counter()
    for step, videos in zip(range(total), batches, strict=False):
        with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            loss = vae_loss(vae, videos.to(device), kl_weight, rng, cfg.foreground_weight, first_frame_weight, mean)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        schedule.step()
        losses.append(_log(stage, step, total, loss, start, cfg))
        if _out_of_time(start, cfg, stage, step):
            break
    vae.eval().requires_grad_(False)
    return losses


class WeightAverage:
    """An exponential moving average of modules' parameters (`torch.optim.swa_utils.AveragedModel`), updated after
    each optimizer step and copied into the modules at the end of a run (`ema_decay`)."""

    def __init__(self, modules: Sequence[torch.nn.Module], decay: float) -> None:
        self.modules = torch.nn.ModuleList(modules)  # one average over all of them
        self.average = AveragedModel(self.modules, multi_avg_fn=get_ema_multi_avg_fn(decay))

    def update(self) -> None:
        self.average.update_parameters(self.modules)

    @torch.no_grad()
    def copy_into_modules(self) -> None:
        for mean, param in zip(self.average.module.parameters(), self.modules.parameters(), strict=True):
            param.copy_(mean)


def train_generator(
    models: DemoModels,
    cfg: TrainConfig,
    batches: Iterable[tuple],
    device: torch.device,
    noise: Callable[[int], torch.Generator] | None = None,
    run_index: int = 0,
    clips: DemoWorld | None = None,
) -> list[float]:
    """Stage 2: AdamW on the generator (and the text encoder unless frozen) by diffusion forcing.

    `batches` gives a `Batch` a step (or its first two fields): latents [B, F, C, h, w] (`encode_latents`)
    and captions (strings, or `Captions`: a prompt switch per clip, `PromptSwitch`), and under
    `rollout_targets` consistent the clips' indices in `clips`, the world the bank was encoded from;
    `noise(step)` the generator of the step's timesteps and noise (default: one seeded stream for the run,
    another for each resumed run, `run_index`).
    """
    generator, text_encoder = models.generator.train().requires_grad_(True), models.text_encoder.eval()
    text_encoder.requires_grad_(not cfg.freeze_text_encoder)  # eval(): no dropout, as at inference
    trained = [generator] + ([] if cfg.freeze_text_encoder else [text_encoder])
    params = [p for module in trained for p in module.parameters()]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    schedule = warmed_up(optimizer, cfg, from_trained=cfg.resume)
    average = WeightAverage(trained, cfg.ema_decay) if cfg.ema_decay > 0 else None
    stream = torch.Generator().manual_seed(cfg.seed + 1 + 1000 * run_index)
    text_len = models.preset.generator.text_len
    losses, start = [], time.perf_counter()
    total = cfg.steps(cfg.generator_steps)
    found, target_seconds = [], []  # consistent targets: the sampled context showed the shape; s per step
    weighed = cfg.latent_foreground_weight != 1
    background = background_latents(models.vae, cfg, device) if weighed else None
    jitter = None if clips is None else context_jitter(cfg, clips)
    for step, item in zip(range(total), batches, strict=False):
        latents, captions, indices = Batch(*item)
        latents = latents.to(device)
        with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            switch = None
            if isinstance(captions[0], Captions):  # a switch bank: each frame under its own prompt
                second = encode_text(text_encoder, models.tokenizer, [c.prompt2 for c in captions], text_len)
                switch = PromptSwitch.of(cfg, second, captions)
                captions = [c.prompt1 for c in captions]
            text = encode_text(text_encoder, models.tokenizer, captions, text_len)
            rng, context = noise(step) if noise else stream, 0
            if cfg.rollout_prob > 0 and torch.rand((), generator=rng) < cfg.rollout_prob:
                blocks = rollout_blocks(cfg, latents.shape[1], rng)
                latents = rollout_context(generator, latents, text, cfg, blocks, rng, switch)
                context = sum(block_sizes(cfg, latents.shape[1])[:blocks])
                if cfg.rollout_targets == "consistent":
                    if clips is None or indices is None:
                        raise ValueError("rollout_targets consistent needs the batches' clip indices and their world")
                    began = time.perf_counter()
                    stories = [clips.story(i) for i in indices]
                    per_call = VAE_PER_CALL if device.type == "cuda" else 1
                    latents, shown = consistent_targets(models.vae, latents, context, stories, per_call=per_call)
                    found += shown.tolist()
                    if device.type == "cuda":  # the encode is queued: time it done
                        torch.cuda.synchronize(device)
                    target_seconds.append(time.perf_counter() - began)
            if jitter is not None and indices is not None:  # hurried contexts: no loss there either
                context = jitter.context_frames(indices, clips).clamp(min=context)
            loss = diffusion_forcing_loss(generator, latents, text, cfg, rng, switch, context, background)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        schedule.step()
        if average is not None:
            average.update()
        losses.append(_log("generator", step, total, loss, start, cfg))
        if _out_of_time(start, cfg, "generator", step):
            break
    if found:
        logger.info(
            "consistent targets: %d rolled-out clips, %.1f%% kept their true targets (no shape in the sampled "
            "context); %.3fs per rollout step to decode, re-render and encode them",
            len(found),
            100 * (1 - sum(found) / len(found)),
            sum(target_seconds) / len(target_seconds),
        )
    generator.eval().requires_grad_(False)
    text_encoder.requires_grad_(False)
    if average is not None:
        save_demo_model(models, Path(cfg.output_dir) / "last_iterate", parts=("transformer", "text_encoder"))
        average.copy_into_modules()
    return losses


WARMUP_FROM_TRAINED = 20


def warmed_up(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, from_trained: bool
) -> torch.optim.lr_scheduler.LambdaLR:
    """A schedule stepped after each optimizer step: the learning rate at step k is (k + 1) / W of its value
    for the first W steps (`cfg.warmup_steps`, see there for its default), then the value itself."""
    steps = cfg.warmup_steps if cfg.warmup_steps is not None else WARMUP_FROM_TRAINED if from_trained else 0
    if steps:
        logger.info("learning rate warm-up over %d steps", steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / steps) if steps else 1.0)


def _out_of_time(start: float, cfg: TrainConfig, stage: str, step: int) -> bool:
    """True once a stage has trained `max_seconds` (a device lease's per-command limit)."""
    if cfg.max_seconds is None or time.perf_counter() - start < cfg.max_seconds:
        return False
    logger.info("%s: stopping after step %d, max_seconds=%s reached", stage, step, cfg.max_seconds)
    return True


def _log(stage: str, step: int, total: int, loss: torch.Tensor, start: float, cfg: TrainConfig) -> float:
    """Log step, loss and elapsed seconds every `log_every` steps and at the last; return the loss."""
    value = float(loss.detach())
    if step % cfg.log_every == 0 or step + 1 == total:
        logger.info("%s step %d loss %.5f elapsed %.1fs", stage, step, value, time.perf_counter() - start)
    return value


# ----------------------------------------------------------------------------------------------
# Saving in the layout the engine's loaders read.
# ----------------------------------------------------------------------------------------------


PARTS = ("transformer", "vae", "text_encoder", "tokenizer")


def save_demo_model(models: DemoModels, out: str | Path, log: dict | None = None, parts: Sequence[str] = PARTS) -> Path:
    """Write `parts` of `out/` as a diffusers-layout wan_model_dir (float32 safetensors) and train_log.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if "transformer" in parts:
        (out / "transformer").mkdir(exist_ok=True)
        state = {k: v.detach().float().cpu().contiguous() for k, v in models.generator.state_dict().items()}
        save_file(state, str(out / "transformer" / "diffusion_pytorch_model.safetensors"))
    if "vae" in parts:
        models.vae.save_pretrained(out / "vae", safe_serialization=True)
    if "text_encoder" in parts:
        models.text_encoder.save_pretrained(out / "text_encoder", safe_serialization=True)
    if "tokenizer" in parts:
        models.tokenizer.save_pretrained(out / "tokenizer")
    if log is not None:
        (out / "train_log.json").write_text(json.dumps(log, indent=1))
    return out


def resume_generator(models: DemoModels, out: Path, device: torch.device) -> None:
    """Continue from the generator and text encoder a previous `--stage generator` saved in `out`.

    A lent GPU runs at most a few minutes per command, so longer training is several resumed runs
    (the optimizer's moments start afresh each time)."""
    weights = out / "transformer" / "diffusion_pytorch_model.safetensors"
    if not weights.is_file() or not (out / "text_encoder").is_dir():
        raise SystemExit(f"--resume: {out} has no trained generator and text encoder to continue from")
    models.generator.load_state_dict(load_file(str(weights), device=str(device)), strict=True)
    models.text_encoder = UMT5EncoderModel.from_pretrained(out / "text_encoder").to(device)
    logger.info("resuming from %s", out)


def run(cfg: TrainConfig, command: str | None = None) -> Path:
    """The stages `cfg.stage` names, then save; returns the output folder. `command` (the command line)
    is appended to the log's `commands`, the runs that made the folder's weights, oldest first."""
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # the fp32 VAE encodes
    if cfg.clip_latent_frames is not None and cfg.clip_latent_frames < 1:
        raise SystemExit(f"--clip_latent_frames {cfg.clip_latent_frames}: a clip needs at least 1 latent frame")
    if cfg.switch_recache not in RECACHE_CHOICES:
        raise SystemExit(f"--switch_recache {cfg.switch_recache}: choose one of {', '.join(RECACHE_CHOICES)}")
    if cfg.rollout_targets not in ROLLOUT_TARGETS:
        raise SystemExit(f"--rollout_targets {cfg.rollout_targets}: choose one of {', '.join(ROLLOUT_TARGETS)}")
    if cfg.context_creep and (cfg.context_offset_px <= 0 or cfg.sink_size <= 0):
        raise SystemExit(
            "--context_creep needs --context_offset_px > 0 and sink_size > 0 (it creeps contexts off after the sinks)"
        )
    if not 0 <= cfg.turn_creep <= 1 or (cfg.turn_creep and cfg.context_offset_px <= 0):
        raise SystemExit(f"--turn_creep {cfg.turn_creep}: a share in [0, 1], with --context_offset_px > 0")
    if cfg.turn_jump and not cfg.turn_creep:
        raise SystemExit("--turn_jump shapes the contexts of --turn_creep: give --turn_creep a share above 0")
    if not 0 <= cfg.rollout_prob <= 1:
        raise SystemExit(f"--rollout_prob {cfg.rollout_prob}: a probability must be in [0, 1]")
    if not 0 <= cfg.first_switch_share <= 1 or (cfg.first_switch_share and not cfg.switch_anywhere):
        raise SystemExit(f"--first_switch_share {cfg.first_switch_share}: a share in [0, 1], with --switch_anywhere")
    if cfg.rollout_prob > 0 and len(block_sizes(cfg, cfg.generator_latent_frames)) < 3:
        raise SystemExit(
            f"--rollout_prob needs clips of at least 3 blocks (block 0, a sampled one, one to learn): "
            f"set --clip_latent_frames to {3 * cfg.frames_per_block} or more"
        )
    if cfg.first_frame_weight <= 0:
        raise SystemExit(f"--first_frame_weight {cfg.first_frame_weight}: a weight must be positive")
    if cfg.resume and cfg.stage != "generator":
        raise SystemExit(f"--resume continues the generator: it needs --stage generator, not --stage {cfg.stage}")
    logger.info("training the %s demo model on %s: %s", cfg.model_name, device, cfg)
    models = build_models(cfg, device)
    out = Path(cfg.output_dir)
    log_path = out / "train_log.json"
    continues = cfg.stage in ("generator", "decoder") and log_path.is_file()
    log = json.loads(log_path.read_text()) if continues else {}
    log |= {"config": dataclasses.asdict(cfg), "device": str(device), "torch": torch.__version__}
    if command:
        _record_command(log, cfg, command)
    if cfg.stage in ("all", "generator") and not cfg.infinite_attention:
        logger.warning(
            "training absolute RoPE positions; configs/demo_video_conditional.yaml runs window-relative ones"
            " (use_infinite_attention: true, trained by --infinite_attention)"
        )
    if cfg.stage in ("all", "vae"):
        if cfg.stage == "vae" and (out / "transformer").is_dir():
            logger.warning("%s holds a generator trained on the old VAE's latents: retrain it (--stage generator)", out)
        vae_world, start = world(cfg, stream=1, num_frames=cfg.vae_video_frames), time.perf_counter()
        vae_batches = (v for v, _ in loader(vae_world, cfg.vae_batch_size, cfg.steps(cfg.vae_steps), cfg))
        stats_videos = world(cfg, stream=1).batch(10**9, cfg.stats_clips)[0]  # generator-length, never trained on
        losses = train_vae(models, cfg, vae_batches, device, stats_videos)
        log["vae"] = _stage_log(losses, time.perf_counter() - start, cfg)
    else:
        models.vae = load_vae(models.preset.vae, out / "vae", device, torch.float32)
        logger.info("VAE: %s (trained by --stage vae)", out / "vae")
        if cfg.resume:
            resume_generator(models, out, device)
    if cfg.stage in ("all", "decoder"):
        start = time.perf_counter()
        clips = decoder_world(cfg)
        batches = (v for v, _ in loader(clips, cfg.decoder_batch_size, cfg.steps(cfg.decoder_steps), cfg))
        losses = train_decoder(models, cfg, batches, device)
        _record_run(log, "decoder", _stage_log(losses, time.perf_counter() - start, cfg), continued=True)
    if cfg.stage in ("all", "generator"):
        previous = len(log.get("generator_runs", [])) + ("generator" in log) if cfg.resume else 0
        start = time.perf_counter()
        # A resumed run draws fresh clips: stream 2 first, then 3, 4, ...
        if cfg.switch_anywhere:
            clips = switch_world(cfg, stream=2 + previous)
        else:
            clips = world(cfg, stream=2 + previous, num_frames=cfg.generator_video_frames)
        bank = latent_bank(models.vae, clips, cfg.bank_clips, cfg, device)
        encode_seconds = time.perf_counter() - start
        logger.info("encoded %d clips in %.1fs", cfg.bank_clips, encode_seconds)
        order = bank_batches(*bank, cfg.batch_size, cfg.seed + previous)
        losses = train_generator(models, cfg, order, device, run_index=previous, clips=clips)
        record = _stage_log(losses, time.perf_counter() - start, cfg) | {"encode_seconds": encode_seconds}
        _record_run(log, "generator", record, continued=cfg.resume)
    save_demo_model(models, out, log, parts=("vae",) if cfg.stage in ("vae", "decoder") else PARTS)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    seconds = {k: round(log[k]["seconds"]) for k in ("vae", "decoder", "generator") if k in log}
    logger.info("saved %s (%.1f MiB); seconds per stage: %s", out, size, seconds)
    return out


def _record_command(log: dict, cfg: TrainConfig, command: str) -> None:
    """Append the command line to `log["commands"]`; a generator trained afresh drops the generator runs
    it replaces, so the list stays the runs that made the folder's weights."""
    kept = log.get("commands", [])
    if cfg.stage == "generator" and not cfg.resume:
        kept = [c for c in kept if c["stage"] != "generator"]
    log["commands"] = [*kept, {"stage": cfg.stage, "command": command}]


def _record_run(log: dict, stage: str, record: dict, continued: bool) -> None:
    """`log[stage]` = this run's record; the earlier runs it continued, oldest first, in `{stage}_runs`."""
    earlier = log.pop(f"{stage}_runs", []) + ([log.pop(stage)] if stage in log else [])
    log[stage] = record
    if continued and earlier:
        log[f"{stage}_runs"] = earlier


def _stage_log(losses: list[float], seconds: float, cfg: TrainConfig) -> dict:
    """One stage run's record: its settings (a resumed run may change them), time, steps and losses."""
    return {
        "config": dataclasses.asdict(cfg),
        "seconds": seconds,
        "steps": len(losses),
        "losses": losses[:: max(1, cfg.log_every)] + losses[-1:],
    }


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for field in dataclasses.fields(TrainConfig):
        default = field.default
        if field.type == "bool":
            parser.add_argument(f"--{field.name}", action="store_true", default=default)
        elif field.name in ("max_steps", "max_seconds", "clip_latent_frames", "warmup_steps"):
            kind = float if field.name == "max_seconds" else int
            parser.add_argument(f"--{field.name}", type=kind, default=None)
        elif field.name == "denoising_steps":
            parser.add_argument("--denoising_steps", type=int, nargs="+", default=list(default))
        elif field.name == "switch_recache":
            parser.add_argument("--switch_recache", choices=RECACHE_CHOICES, default=default)
        elif field.name == "rollout_targets":
            parser.add_argument("--rollout_targets", choices=ROLLOUT_TARGETS, default=default)
        elif field.name == "stage":
            parser.add_argument("--stage", choices=("all", "vae", "generator", "decoder"), default="all")
        else:
            parser.add_argument(f"--{field.name}", type=type(default), default=default)
    args = vars(parser.parse_args(argv))
    return TrainConfig(**{**args, "denoising_steps": tuple(args["denoising_steps"])})


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = sys.argv[1:] if argv is None else list(argv)
    run(parse_args(args), command=shlex.join(["python", "scripts/train_demo.py", *args]))


if __name__ == "__main__":
    main()
