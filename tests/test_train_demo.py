"""scripts/train_demo.py at a tiny size on CPU: the losses fall on a fixed batch, and what it saves loads
through the engine's normal loaders and generates."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from longlive.components import locate_wan_files
from longlive.kv_cache import frame_visibility_mask
from longlive.pipeline import VideoConditionalPipeline
from longlive.presets import PRESETS
from tests.conftest import REPO, script_module, tiny_config

train_demo = script_module("scripts/train_demo.py")

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_train_config(tmp_path, **overrides) -> train_demo.TrainConfig:
    settings = dict(
        output_dir=str(tmp_path / "demo"),
        model_name="tiny",
        device="cpu",
        height=32,
        width=32,
        num_latent_frames=6,
        local_attn_size=6,
        sink_size=1,
        batch_size=2,
        vae_batch_size=1,
        log_every=1,
    )
    return train_demo.TrainConfig(**(settings | overrides))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Both stages for a few steps on one fixed batch (fixed noise too), then saved."""
    tmp_path = tmp_path_factory.mktemp("train")
    cfg = tiny_train_config(tmp_path, vae_steps=4, vae_lr=2e-3, generator_steps=12, lr=2e-3, num_latent_frames=3)
    models = train_demo.build_models(cfg, torch.device("cpu"))
    videos, _ = train_demo.world(cfg, stream=1).batch(0, 1)
    vae_losses = train_demo.train_vae(models, cfg, itertools.repeat(videos), torch.device("cpu"), videos)
    cfg = dataclass_replace(cfg, num_latent_frames=6)
    videos, captions = train_demo.world(cfg, stream=2).batch(0, cfg.batch_size)
    batch = train_demo.encode_latents(models.vae, videos), captions
    generator_losses = train_demo.train_generator(
        models, cfg, itertools.repeat(batch), torch.device("cpu"), noise=lambda step: torch.Generator().manual_seed(0)
    )
    out = train_demo.save_demo_model(models, cfg.output_dir, {"test": True})
    return models, vae_losses, generator_losses, out


def dataclass_replace(cfg, **changes):
    import dataclasses

    return dataclasses.replace(cfg, **changes)


def train_a_copy(models, cfg, batches, seed: int, **kwargs) -> tuple:
    """`train_generator` on a copy of `models`' generator and text encoder (the module's trained models stay
    as they are), each step's noise from a generator seeded with `seed`; returns (the copy, the losses)."""
    trial = dataclass_replace(models, generator=copy.deepcopy(models.generator))
    trial.text_encoder = copy.deepcopy(models.text_encoder)
    seeded = lambda step: torch.Generator().manual_seed(seed)  # noqa: E731
    return trial, train_demo.train_generator(trial, cfg, batches, torch.device("cpu"), seeded, **kwargs)


def test_vae_loss_is_finite_and_falls(trained):
    _, vae_losses, _, _ = trained
    assert all(math.isfinite(v) for v in vae_losses)
    assert vae_losses[-1] < 0.8 * vae_losses[0], vae_losses


def test_generator_loss_is_finite_and_falls(trained):
    _, _, generator_losses, _ = trained
    assert all(math.isfinite(v) for v in generator_losses)
    assert min(generator_losses[-3:]) < 0.8 * generator_losses[0], generator_losses


def test_latent_statistics_are_measured_and_saved(trained):
    models, _, _, out = trained
    z_dim = PRESETS["tiny"].vae.z_dim
    saved = json.loads((out / "vae" / "config.json").read_text())
    assert saved["latents_mean"] == pytest.approx(list(models.vae.config.latents_mean))
    assert len(saved["latents_std"]) == z_dim and all(s > 0 for s in saved["latents_std"])
    # The measured statistics make the training latents roughly standard.
    videos, _ = train_demo.world(tiny_train_config(out, num_latent_frames=3), stream=1).batch(0, 1)
    latents = train_demo.encode_latents(models.vae, videos)
    assert latents.mean().abs() < 0.5 and 0.5 < latents.std() < 2.0


def test_saved_folder_is_a_diffusers_wan_model_dir(trained):
    _, _, _, out = trained
    files = locate_wan_files(out)
    assert files.layout == "diffusers"
    assert (out / "transformer" / "diffusion_pytorch_model.safetensors").is_file()
    from safetensors import safe_open

    with safe_open(str(out / "transformer" / "diffusion_pytorch_model.safetensors"), "pt") as handle:
        assert "blocks.0.self_attn.q.weight" in handle.keys()  # original Wan names


def test_saved_model_loads_through_the_pipeline_and_generates(trained, tmp_path):
    models, _, _, out = trained
    cfg = tiny_config(
        f"wan_model_dir={out}", "height=32", "width=32", "num_output_frames=6", "num_conditioning_frames=5"
    )
    pipe = VideoConditionalPipeline.from_config(cfg)
    for name, tensor in models.generator.state_dict().items():
        assert torch.equal(pipe.generator.state_dict()[name], tensor), name
    assert list(pipe.vae.vae.config.latents_mean) == pytest.approx(list(models.vae.config.latents_mean))
    trained_embedding = train_demo.encode_text(models.text_encoder, models.tokenizer, ["a red square moves up"], 16)
    assert torch.allclose(pipe.prompts.encode("a red square moves up"), trained_embedding, atol=1e-5)
    video, _ = train_demo.world(tiny_train_config(tmp_path, num_latent_frames=2), stream=3)[0]
    blocks = list(pipe.stream("a red square moves up", "the red square turns blue", video[None], seed=0))
    # 5 video frames -> 2 conditioning latent frames, then blocks of 3 and 1 fill the 6 latent frames
    assert [(b.block.size, b.block.conditioning) for b in blocks] == [(2, True), (3, False), (1, False)]
    result = torch.cat([b.frames for b in blocks], dim=2)
    assert result.shape == (1, 3, 21, 32, 32) and torch.isfinite(result).all()


def test_decoder_loss_weighs_frame_zero_and_decodes_the_posterior_mean(trained, tmp_path):
    """`--first_frame_weight W` multiplies frame 0's pixel weights by W (1: the loss as before), and
    `--decoder_mean` reconstructs from the posterior mean (what StreamingVAE decodes), not a sample."""
    from longlive.demo_world import foreground_mask

    vae = trained[0].vae
    videos, _ = train_demo.world(tiny_train_config(tmp_path, num_latent_frames=3), stream=1).batch(0, 1)
    with torch.no_grad():
        error = (vae.decode(vae.encode(videos).latent_dist.mode()).sample - videos).pow(2)  # [B, 3, N, H, W]
        weight = 1 + 9.0 * foreground_mask(videos).unsqueeze(1).float()
        for first in (1.0, 20.0):
            frame_weight = weight.clone()
            frame_weight[:, :, 0] *= first
            expected = (error * frame_weight).sum() / (frame_weight.sum() * 3)
            loss = train_demo.vae_loss(vae, videos, 0.0, None, 9.0, first_frame_weight=first, mean=True)
            torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-7)
        assert not torch.isclose(loss, train_demo.vae_loss(vae, videos, 0.0, None, 9.0, mean=True))
        sampled = train_demo.vae_loss(vae, videos, 0.0, torch.Generator().manual_seed(0), 9.0)
        assert not torch.isclose(sampled, train_demo.vae_loss(vae, videos, 0.0, None, 9.0, mean=True))
    cfg = train_demo.parse_args(["--first_frame_weight", "20", "--decoder_mean"])
    assert cfg.first_frame_weight == 20.0 and cfg.decoder_mean
    assert train_demo.TrainConfig().first_frame_weight == 1.0 and not train_demo.TrainConfig().decoder_mean
    with pytest.raises(SystemExit, match="--first_frame_weight 0.0"):
        train_demo.run(train_demo.parse_args(["--first_frame_weight", "0"]))


def test_block_mask_is_the_inference_visibility(tmp_path):
    cfg = tiny_train_config(tmp_path)
    assert torch.equal(train_demo.block_mask(cfg, 7), frame_visibility_mask([3, 3, 1], 6, 1))
    assert (
        train_demo.block_mask(dataclass_replace(cfg, local_attn_size=-1), 6)
        .tril()
        .equal(frame_visibility_mask([3, 3], 6, 0).tril())
    )


def test_timesteps_lie_on_the_grid_with_clean_leading_blocks(tmp_path):
    cfg = tiny_train_config(tmp_path, clean_context_prob=1.0)
    timesteps = train_demo.sample_timesteps(cfg, 8, 9, torch.Generator().manual_seed(0))
    assert timesteps.shape == (8, 9)
    assert (timesteps[:, :3] == 0).all() and (timesteps[:, 6:] > 0).all()  # 1 or 2 of 3 blocks clean
    grid = set((train_demo.shifted_sigmas(cfg.timestep_shift) * 1000).tolist())
    assert all(t in grid for t in timesteps[timesteps > 0].tolist())


def test_command_line_reads_every_setting():
    cfg = train_demo.parse_args(["--max_steps", "5", "--device", "cpu", "--freeze_text_encoder"])
    assert cfg.max_steps == 5 and cfg.device == "cpu" and cfg.freeze_text_encoder
    assert cfg.steps(cfg.generator_steps) == 5 and train_demo.TrainConfig().steps(100) == 100
    assert cfg.clip_latent_frames is None and cfg.generator_latent_frames == cfg.num_latent_frames == 12
    cfg = train_demo.parse_args(["--clip_latent_frames", "36", "--infinite_attention"])
    assert cfg.generator_latent_frames == 36 and cfg.infinite_attention and cfg.num_video_frames == 45
    with pytest.raises(SystemExit, match="--clip_latent_frames 0"):
        train_demo.run(train_demo.parse_args(["--clip_latent_frames", "0"]))


def test_demo_preset_fits_the_size_budget():
    from transformers import UMT5EncoderModel

    from longlive.model import CausalWanModel
    from longlive.text_encoder import umt5_config
    from longlive.vae import build_vae

    preset = PRESETS["demo"]
    with torch.device("meta"):
        text_encoder = UMT5EncoderModel(umt5_config(preset.text_encoder))
        parts = (CausalWanModel(preset.generator), build_vae(preset.vae), text_encoder)
    params = sum(p.numel() for part in parts for p in part.parameters())
    assert params * 4 < 30 * 10**6  # float32 bytes, under the 30 MB
    assert preset.generator.text_dim == preset.text_encoder.d_model


def test_the_command_runs_end_to_end(tmp_path, caplog):
    out = tmp_path / "cli"
    args = ["--model_name", "tiny", "--device", "cpu", "--max_steps", "1", "--output_dir", str(out)]
    args += ["--height", "32", "--width", "32", "--num_latent_frames", "4", "--local_attn_size", "6"]
    args += ["--sink_size", "1", "--batch_size", "1", "--vae_batch_size", "1", "--workers", "0"]
    args += ["--stats_clips", "2", "--bank_clips", "2", "--encode_batch_size", "2"]
    train_demo.main(args + ["--stage", "vae"])
    assert (out / "vae" / "config.json").is_file() and not (out / "transformer").exists()
    vae_weights = (out / "vae" / "diffusion_pytorch_model.safetensors").read_bytes()
    caplog.clear()
    train_demo.main(args + ["--stage", "generator", "--max_seconds", "0"])  # reads vae/, one step
    assert "training absolute RoPE positions" in caplog.text  # the demo config runs window-relative ones
    log = json.loads((out / "train_log.json").read_text())
    assert log["config"]["stage"] == "generator" and log["vae"]["steps"] == 1 and log["generator"]["steps"] == 1
    assert locate_wan_files(out).layout == "diffusers"
    assert (out / "vae" / "diffusion_pytorch_model.safetensors").read_bytes() == vae_weights

    weights = out / "transformer" / "diffusion_pytorch_model.safetensors"
    first = load_file(str(weights))
    train_demo.main(args + ["--stage", "generator", "--max_seconds", "0", "--resume"])
    log = json.loads((out / "train_log.json").read_text())
    assert len(log["generator_runs"]) == 1 and log["generator"]["steps"] == 1
    resumed = load_file(str(weights))
    # One more step from the saved weights: close to them, not a fresh random start.
    assert all((resumed[k] - first[k]).abs().max() < 0.05 for k in first)
    assert any(not torch.equal(resumed[k], first[k]) for k in first)
    with pytest.raises(SystemExit, match="--resume continues the generator"):
        train_demo.main(args + ["--stage", "vae", "--resume"])

    vae_before = load_file(str(out / "vae" / "diffusion_pytorch_model.safetensors"))
    vae_config = json.loads((out / "vae" / "config.json").read_text())
    train_demo.main(args + ["--stage", "decoder", "--max_seconds", "0"])  # rewrites vae/ alone
    vae_after = load_file(str(out / "vae" / "diffusion_pytorch_model.safetensors"))
    decoder = [k for k in vae_after if k.startswith(("decoder.", "post_quant_conv."))]
    assert decoder and any(not torch.equal(vae_after[k], vae_before[k]) for k in decoder)
    assert all(torch.equal(vae_after[k], vae_before[k]) for k in vae_after if k not in decoder)
    stats = ("latents_mean", "latents_std")
    assert all(json.loads((out / "vae" / "config.json").read_text())[k] == vae_config[k] for k in stats)
    assert load_file(str(weights)).keys() == resumed.keys()
    assert all(torch.equal(load_file(str(weights))[k], resumed[k]) for k in resumed)
    log = json.loads((out / "train_log.json").read_text())
    assert log["decoder"]["steps"] == 1 and log["decoder"]["config"]["stage"] == "decoder"
    assert [c["stage"] for c in log["commands"]] == ["vae", "generator", "generator", "decoder"]
    assert log["commands"][-1]["command"].endswith("--stage decoder --max_seconds 0")
    assert log["generator"]["encode_seconds"] > 0

    train_demo.main(args + ["--stage", "decoder", "--max_seconds", "0"])  # a second decoder run is kept too
    long_clips = ["--clip_latent_frames", "7", "--infinite_attention"]  # issue 19's stage, recorded in the log
    train_demo.main(args + ["--stage", "generator", "--max_seconds", "0", *long_clips])  # afresh: replaces both runs
    log = json.loads((out / "train_log.json").read_text())
    assert log["generator"]["config"]["clip_latent_frames"] == 7 and log["generator"]["config"]["infinite_attention"]
    assert log["commands"][-1]["command"].endswith("--clip_latent_frames 7 --infinite_attention")
    assert len(log["decoder_runs"]) == 1 and "generator_runs" not in log
    assert [c["stage"] for c in log["commands"]] == ["vae", "decoder", "decoder", "generator"]

    switches = ["--switch_anywhere", "--switch_recache", "window", "--change_prob", "1.0"]  # late prompt switches
    train_demo.main(args + ["--stage", "generator", "--max_seconds", "0", "--resume", *long_clips, *switches])
    log = json.loads((out / "train_log.json").read_text())
    assert log["generator"]["config"]["switch_anywhere"] and log["generator"]["config"]["switch_recache"] == "window"
    assert log["generator"]["steps"] == 1 and len(log["generator_runs"]) == 1
    with pytest.raises(SystemExit):
        train_demo.main(args + ["--stage", "generator", "--switch_recache", "sometimes"])

    before = load_file(str(weights))  # --ema_decay: the average saved, the last iterate beside it
    train_demo.main(args + ["--stage", "generator", "--max_steps", "3", "--resume", "--ema_decay", "0.5"])
    averaged, last = load_file(str(weights)), load_file(str(out / "last_iterate" / weights.relative_to(out)))
    moved = [k for k in before if not torch.equal(last[k], before[k])]
    assert moved and any(not torch.equal(averaged[k], last[k]) for k in moved)
    assert (out / "last_iterate" / "text_encoder" / "model.safetensors").is_file()


def test_vae_statistics_of_the_wrong_length_are_refused(tmp_path):
    from longlive.weights import WeightsError, vae_latent_stats

    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text(json.dumps({"latents_mean": [0.0] * 3, "latents_std": [1.0] * 3}))
    with pytest.raises(WeightsError, match="latents_mean has 3 values"):
        vae_latent_stats(tmp_path, 16)
    assert vae_latent_stats(tmp_path / "nowhere", 16) == (None, None)  # published checkpoints: defaults


def test_every_caption_fits_the_demo_text_length():
    from longlive.demo_world import COLOURS, PHRASES, SHAPES
    from longlive.text_encoder import byte_level_tokenizer

    tokenizer = byte_level_tokenizer()
    longest = max((f"a {c} {s} moves {p}" for c in COLOURS for s in SHAPES for p in PHRASES.values()), key=len)
    longest_change = max((f"the {c} {s} moves {p}" for c in COLOURS for s in SHAPES for p in PHRASES.values()), key=len)
    for text in (longest, longest_change):
        assert len(tokenizer(text).input_ids) <= PRESETS["demo"].generator.text_len, text


def test_bank_batches_cover_each_clip_once_per_epoch():
    latents = torch.arange(10.0).view(10, 1, 1, 1, 1)
    captions = [str(i) for i in range(10)]
    batches = train_demo.bank_batches(latents, captions, batch_size=3, seed=0)
    epoch = [next(batches) for _ in range(3)]  # 10 // 3 full batches; the remainder is dropped
    seen = [int(x) for lat, _, _ in epoch for x in lat.flatten()]
    assert len(set(seen)) == 9
    assert all(caps == [str(int(x)) for x in lat.flatten()] for lat, caps, _ in epoch)
    assert all(clips == [int(x) for x in lat.flatten()] for lat, _, clips in epoch)  # each clip's world index
    assert next(batches)[0].shape == (3, 1, 1, 1, 1)  # the next epoch, in a new order


@pytest.mark.parametrize("infinite", [False, True])
@torch.no_grad()
def test_long_clip_forward_is_the_rollout_past_the_window(tmp_path, tiny_model, infinite):
    """Issue 19: a clip three windows long, trained in one forward under `attention_layout`, gives every
    block what the KV cache gives it when rolling out past the window (absolute or window-relative RoPE)."""
    from test_engine import LATENT_HW, cache_for, random_text

    cfg = tiny_train_config(tmp_path, clip_latent_frames=18, infinite_attention=infinite)
    frames = cfg.generator_latent_frames
    layout = train_demo.attention_layout(cfg, frames)
    assert torch.equal(layout["frame_mask"], frame_visibility_mask([3] * 6, cfg.local_attn_size, cfg.sink_size))
    assert ("frame_positions" in layout) == infinite
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(1, frames, tiny_model.arch.in_channels, *LATENT_HW, generator=g)
    timesteps = torch.rand(1, frames, generator=g) * 1000
    text = tiny_model.prepare_text(random_text(tiny_model.arch))
    full = tiny_model(latents, timesteps, text, **layout)
    cache = cache_for(tiny_model, cfg.local_attn_size, cfg.sink_size)
    cache.window_rope = infinite
    rolled = [tiny_model(latents[:, s : s + 3], timesteps[:, s : s + 3], text, cache, s) for s in range(0, frames, 3)]
    torch.testing.assert_close(torch.cat(rolled, dim=1), full, atol=1e-5, rtol=0)
    if infinite:  # past the window the positions differ from absolute ones, so the check above can fail
        assert not torch.allclose(tiny_model(latents, timesteps, text, frame_mask=layout["frame_mask"]), full)


@pytest.mark.parametrize("infinite", [False, True])
def test_long_clip_stage_trains_with_the_inference_mask(trained, tmp_path, monkeypatch, infinite):
    """`clip_latent_frames` past the window: a couple of steps on long clips, every forward under the
    engine's sink + rolling-window mask (and its window positions under `infinite_attention`)."""
    models, _, _, _ = trained
    cfg = tiny_train_config(tmp_path, clip_latent_frames=12, infinite_attention=infinite, generator_steps=2)
    videos, captions = train_demo.world(cfg, stream=2, num_frames=cfg.generator_video_frames).batch(0, 2)
    batch = train_demo.encode_latents(models.vae, videos), captions
    assert batch[0].shape[1] == 12
    seen, forward = [], type(models.generator).forward

    def spy(self, *args, **kwargs):
        seen.append(kwargs)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(type(models.generator), "forward", spy)
    generator = copy.deepcopy(models.generator)
    losses = train_demo.train_generator(
        dataclass_replace(models, generator=generator), cfg, itertools.repeat(batch), torch.device("cpu")
    )
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    expected = frame_visibility_mask([3] * 4, cfg.local_attn_size, cfg.sink_size)
    assert len(seen) == 2 and all(torch.equal(kw["frame_mask"], expected) for kw in seen)
    assert not expected[-1, cfg.sink_size : 12 - (cfg.local_attn_size - cfg.sink_size)].any()  # the window rolled
    positions = [kw.get("frame_positions") for kw in seen]
    assert all((p == train_demo.window_positions(cfg, 12)) if infinite else p is None for p in positions)
    if infinite:
        assert max(positions[0].queries) == cfg.local_attn_size - 1  # window-relative, not frame 11


@torch.no_grad()
def test_per_frame_text_is_one_prompt_when_captions_agree_and_switches_only_later_frames(tmp_path, tiny_model):
    """`--switch_anywhere`: the per-frame cross-attention equals the one-prompt forward when both prompts
    are the same; with a different prompt2 from frame 6 on, frames 0-5 are unchanged (block-causal: they
    see neither prompt2 nor the frames under it) and every later frame changes."""
    from test_engine import LATENT_HW, random_text

    cfg = tiny_train_config(tmp_path, clip_latent_frames=12)
    frames, layout = 12, train_demo.attention_layout(cfg, 12)
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(2, frames, tiny_model.arch.in_channels, *LATENT_HW, generator=g)
    timesteps = torch.rand(2, frames, generator=g) * 1000
    first = random_text(tiny_model.arch).expand(2, -1, -1)
    second = random_text(tiny_model.arch, seed=2).expand(2, -1, -1)
    after = torch.arange(frames)[None].expand(2, -1) >= 6  # [B, F]
    one = tiny_model(latents, timesteps, tiny_model.prepare_text(first), **layout)
    same = tiny_model(latents, timesteps, train_demo.per_frame_text(tiny_model, first, first, after), **layout)
    torch.testing.assert_close(same, one, atol=1e-5, rtol=0)
    switched = tiny_model(latents, timesteps, train_demo.per_frame_text(tiny_model, first, second, after), **layout)
    torch.testing.assert_close(switched[:, :6], one[:, :6], atol=1e-5, rtol=0)
    assert ((switched[:, 6:] - one[:, 6:]).flatten(2).abs().amax(2) > 1e-4).all()


def test_switch_mirrors_the_engines_recache(tmp_path):
    """The frames trained clean under prompt2 before a switch are those the engine's KV-recache reruns:
    none at the video-conditional switch (change_latent_frame) or with switch_recache none; for a late
    switch the window less the sinks (longlive and window agree there); for an early one longlive's
    rerun from frame 0."""
    cfg = tiny_train_config(tmp_path, local_attn_size=6, sink_size=1, change_latent_frame=3)
    assert train_demo.recache_span(cfg, 3) == range(3, 3)
    assert train_demo.recache_span(cfg, 12) == range(7, 12)  # window 6 - sink 1 = 5 frames
    assert train_demo.recache_span(dataclass_replace(cfg, switch_recache="window"), 12) == range(7, 12)
    assert train_demo.recache_span(cfg, 6) == range(0, 6)  # longlive: an early switch reruns the sink too
    assert train_demo.recache_span(dataclass_replace(cfg, switch_recache="none"), 12) == range(12, 12)
    captions = [train_demo.Captions("a", "b", 12), train_demo.Captions("a", "a", 15), train_demo.Captions("a", "b", 3)]
    switch = train_demo.PromptSwitch.of(cfg, torch.zeros(3, 1, 1), captions)
    recached, after = switch.recached(15), switch.after(15)
    assert recached.sum(1).tolist() == [5, 0, 0] and recached[0, 7:12].all()
    assert after.sum(1).tolist() == [8, 0, 12]


def test_switch_anywhere_stage_trains_late_switches(trained, tmp_path, monkeypatch):
    """The stage's clips change at random block boundaries after the first block (late ones included),
    each frame's content matching its prompt; a couple of steps run with per-frame text and the recached
    frames clean."""
    models, _, _, _ = trained
    cfg = tiny_train_config(tmp_path, clip_latent_frames=12, switch_anywhere=True, change_prob=1.0, generator_steps=2)
    clips = train_demo.switch_world(cfg, stream=2)
    changes = {train_demo._SwitchItems(clips, 64)[i][1].change for i in range(64)}
    assert changes == {3, 6, 9}  # every block boundary after the first, the last block's included
    video, captions = train_demo._SwitchItems(clips, 1)[0]
    clip = clips.clip(0)
    assert clip.change.frame == 4 * captions.change - 3 and captions.prompt2 != captions.prompt1
    bank = train_demo.latent_bank(models.vae, clips, 2, dataclass_replace(cfg, workers=0, encode_batch_size=2), "cpu")
    assert all(isinstance(c, train_demo.Captions) for c in bank[1]) and bank[0].shape[1] == 12
    late = [i for i in range(64) if train_demo._SwitchItems(clips, 64)[i][1].change > 3][:2]  # recached windows
    videos, captions = zip(*(train_demo._SwitchItems(clips, 64)[i] for i in late), strict=True)
    batch = train_demo.encode_latents(models.vae, torch.stack(videos)), list(captions)
    seen, forward = [], type(models.generator).forward

    def spy(self, latents, timesteps, text, **kwargs):
        seen.append((timesteps, text.keys[0].shape[0]))
        return forward(self, latents, timesteps, text, **kwargs)

    monkeypatch.setattr(type(models.generator), "forward", spy)
    generator = copy.deepcopy(models.generator)
    losses = train_demo.train_generator(
        dataclass_replace(models, generator=generator), cfg, itertools.repeat(batch), torch.device("cpu")
    )
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    recached = train_demo.PromptSwitch.of(cfg, torch.zeros(2, 1, 1), batch[1]).recached(12)
    assert recached.any(1).all()
    assert len(seen) == 2 and all(rows == 2 * 12 for _, rows in seen)  # per-frame text: a row per clip and frame
    assert all((timesteps[recached] == 0).all() for timesteps, _ in seen)  # the recached window: clean
    assert not generator.state_dict()["head.head.weight"].equal(models.generator.state_dict()["head.head.weight"])


@pytest.mark.parametrize("infinite", [False, True])
def test_rollout_context_is_the_engines_rollout(infinite):
    """`--rollout_prob` trains on the model's own outputs: `rollout_context`'s sampled blocks are the blocks
    the engine generates (KV cache, its sampler, its noise order) from the same conditioning, prompt and
    seed, past the window (absolute or window-relative RoPE); the shipped demo model, float32, CPU."""
    from longlive.config import load_config
    from longlive.demo_world import DemoWorld

    cfg = train_demo.TrainConfig(device="cpu", infinite_attention=infinite)
    frames = 15  # 5 blocks: the conditioning one, then 4 sampled, the last ones past the 9-frame window
    demo = [f"wan_model_dir={REPO / 'demo_model'}", f"num_output_frames={frames}"]
    config = load_config(
        REPO / "configs" / "demo_video_conditional.yaml", [*demo, f"model_kwargs.use_infinite_attention={infinite}"]
    )
    assert tuple(config.denoising_step_list) == cfg.denoising_steps and config.model_kwargs.sink_size == cfg.sink_size
    assert frames > config.model_kwargs.local_attn_size
    pipe = VideoConditionalPipeline.from_config(config, "cpu")
    clip = DemoWorld(0, config.num_conditioning_frames, cfg.height, cfg.width, 1.0).clip(0)
    generated = pipe.stream(clip.prompt1, video=clip.video[None], seed=0, decode=False)
    engine = torch.cat([b.latents for b in generated if not b.block.conditioning], dim=1)  # [1, 12, C, h, w]
    conditioning = pipe._encode_conditioning(clip.video[None])  # [1, 3, C, h, w]
    latents = torch.cat([conditioning, torch.zeros_like(engine)], dim=1)
    text = pipe.prompts.encode(clip.prompt1)
    blocks = frames // cfg.frames_per_block
    rolled, other_seed = (
        train_demo.rollout_context(pipe.generator, latents, text, cfg, blocks, torch.Generator().manual_seed(seed))
        for seed in (0, 1)
    )
    assert torch.equal(rolled[:, :3], conditioning)  # block 0, the conditioning, is kept
    # measured: 6e-6 and 8e-6 on the 2-px lattice's clip, 5.3e-5 on the cell lattice's (one clip's 12 frames of
    # float32 rounding, carried through the window)
    torch.testing.assert_close(rolled[:, 3:], engine, atol=1e-4, rtol=0)
    assert not torch.allclose(other_seed[:, 3:], engine, atol=1e-4, rtol=0)  # the noise order matters


def test_rollout_steps_train_later_blocks_from_sampled_context(trained, tmp_path, monkeypatch):
    """With `rollout_prob` 1 every step samples blocks 1..k-1 with the generator and trains on the rest only:
    the loss sees block 0 and the true later blocks as the clip has them, the sampled ones in between
    clean (context, no loss)."""
    models, _, _, _ = trained
    cfg = tiny_train_config(tmp_path, clip_latent_frames=12, rollout_prob=1.0, generator_steps=2)
    videos, captions = train_demo.world(cfg, stream=2, num_frames=cfg.generator_video_frames).batch(0, 2)
    batch = train_demo.encode_latents(models.vae, videos), captions
    seen, loss = [], train_demo.diffusion_forcing_loss

    def spy(generator, latents, text, cfg_, rng, switch=None, context_frames=0, background=None):
        seen.append((latents, context_frames))
        return loss(generator, latents, text, cfg_, rng, switch, context_frames, background)

    trained_on, forward = [], type(models.generator).forward

    def spy_forward(self, latents, timesteps, *args, **kwargs):
        if torch.is_grad_enabled():  # the loss's forward (the rollout's run without gradients)
            trained_on.append(timesteps)
        return forward(self, latents, timesteps, *args, **kwargs)

    monkeypatch.setattr(train_demo, "diffusion_forcing_loss", spy)
    monkeypatch.setattr(type(models.generator), "forward", spy_forward)
    generator = copy.deepcopy(models.generator)
    losses = train_demo.train_generator(
        dataclass_replace(models, generator=generator), cfg, itertools.repeat(batch), torch.device("cpu")
    )
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    clip = batch[0]
    assert len(trained_on) == 2 and all((t[:, :c] == 0).all() for t, (_, c) in zip(trained_on, seen, strict=True))
    for latents, context in seen:
        assert context in (6, 9)  # blocks 0..k-1 for k in 2..3 of the clip's 4
        assert torch.equal(latents[:, :3], clip[:, :3]) and torch.equal(latents[:, context:], clip[:, context:])
        assert not torch.allclose(latents[:, 3:context], clip[:, 3:context])  # sampled, not the clip's own


def test_first_switch_share_weighs_the_video_conditional_switch(tmp_path):
    """`--first_switch_share S`: under switch_anywhere, a share S of change clips switch at the first
    generated block (the video-conditional switch, no recache), the later boundaries sharing the rest evenly;
    without it every boundary is as likely (1 in 3 each for the tiny 12-frame clips)."""
    cfg = tiny_train_config(tmp_path, clip_latent_frames=12, switch_anywhere=True, change_prob=1.0)
    n = 3000

    def shares(config) -> dict[int, float]:
        clips = train_demo.switch_world(config, stream=2)
        frames = [clips.story(i)[1].frame for i in range(n)]
        return {f: frames.count(f) / n for f in sorted(set(frames))}

    assert shares(cfg) == pytest.approx({9: 1 / 3, 21: 1 / 3, 33: 1 / 3}, abs=0.03)
    weighted = shares(dataclass_replace(cfg, first_switch_share=0.6))
    assert weighted == pytest.approx({9: 0.6, 21: 0.2, 33: 0.2}, abs=0.03)
    for settings, message in (
        (dict(first_switch_share=1.5), "--first_switch_share 1.5"),
        (dict(first_switch_share=0.5, switch_anywhere=False), "with --switch_anywhere"),
    ):
        with pytest.raises(SystemExit, match=message):
            train_demo.run(dataclass_replace(cfg, stage="generator", **settings))


def test_rollout_settings_are_checked(tmp_path):
    for settings, message in (
        (dict(rollout_prob=1.5), "--rollout_prob 1.5"),
        (dict(rollout_prob=0.5, clip_latent_frames=6), "at least 3 blocks"),
    ):
        with pytest.raises(SystemExit, match=message):
            train_demo.run(tiny_train_config(tmp_path, stage="generator", **settings))


@pytest.fixture(scope="module")
def planted():
    """`consistent_targets` with the shipped demo VAE on two clips of 9 latent frames, context 6 (video
    frames 0-20): a red square whose sampled context is its own clip with the square 3 px further right
    (it then bounces off the right wall 2 frames before the truth does), and a blue circle whose sampled
    context is the empty background."""
    from longlive.demo_world import BACKGROUND, Scene, render
    from longlive.weights import load_vae

    vae = load_vae(PRESETS["demo"].vae, REPO / "demo_model" / "vae", "cpu", torch.float32)
    frames, context = 9, 6
    num_video = 4 * frames - 3
    square = Scene("square", "red", (30.0, 20.0), (0.0, 1.5), 14.0)
    circle = Scene("circle", "blue", (20.0, 40.0), (1.0, 0.0), 16.0)
    videos = torch.stack([render(scene, num_video) for scene in (square, circle)])
    true = train_demo.encode_latents(vae, videos)
    moved = render(dataclasses.replace(square, position=(30.0, 23.0)), num_video)
    empty = torch.tensor(BACKGROUND, dtype=torch.float32).view(3, 1, 1, 1).expand_as(moved) / 127.5 - 1
    sampled = torch.cat(
        [train_demo.encode_latents(vae, torch.stack([moved, empty]))[:, :context], true[:, context:]], 1
    )
    stories = [(square, None), (circle, None)]
    out, found = train_demo.consistent_targets(vae, sampled, context, stories)
    return vae, videos, true, sampled, out, found, context, square, stories


def test_consistent_targets_continue_from_where_the_context_put_the_shape(planted):
    """`--rollout_targets consistent`: after a context whose shape sits 3 px right of the truth, the targets
    (decoded as the pipeline decodes) continue from there with the true velocity and bounce off the wall
    2 frames before the truth; a change later in the clip (colour, direction) comes at its frame."""
    from longlive.demo_world import Change, dominant_colours, foreground_centroid, paint, rasterize, render, trajectory
    from longlive.vae import StreamingVAE

    vae, videos, _, sampled, out, found, context, square, _ = planted
    assert found[0]
    assert torch.equal(out[0, :context], sampled[0, :context])  # the context stays the sampled one
    decoded = StreamingVAE(vae).decode(out[:1])[0]  # [3, N, H, W]
    first, num_video = 4 * context - 3, decoded.shape[1]  # the first video frame after the context
    measured = foreground_centroid(decoded)[first:]  # [12, 2]
    moved = dataclasses.replace(square, position=(30.0, square.position[1] + 3))
    expected = torch.tensor([s.position for s in trajectory(moved, num_video, 64, 64)][first:])  # the world's physics
    assert (expected[1:, 1] - expected[:-1, 1]).min() < 0 < (expected[1:, 1] - expected[:-1, 1]).max()  # a bounce
    truth = foreground_centroid(videos[0])[first:]
    error = (measured - expected.float()).norm(dim=1)
    assert error.mean() < 1.0 and error.max() < 1.6, error  # measured: 0.6 mean, 1.2 at most
    assert (measured - truth).norm(dim=1).mean() > 2.0  # the true targets (measured: 2.6 px away)
    assert (measured - (truth + torch.tensor([0.0, 3.0]))).norm(dim=1).mean() > 3.0  # not the truth shifted: 4.0
    assert dominant_colours(decoded[:, first:]) == ["red"] * (num_video - first)

    for change, colour, step in (
        (Change(25, colour="blue"), "blue", (0, -1.5)),
        (Change(25, direction="down"), "red", (1.5, 0)),
    ):
        states = train_demo.shifted_continuation(square, change, num_video, 64, 64, (0.0, 3.0), first - 1)
        video = paint(*rasterize(states, 64, 64))
        assert torch.equal(video[:, :first], render(square, first, change=change))  # true up to the context's end
        assert dominant_colours(video[:, first:25]) == ["red"] * (25 - first)
        assert dominant_colours(video[:, 25:]) == [colour] * (num_video - 25)
        path = foreground_centroid(video)[25:]
        assert torch.allclose(path[1:] - path[:-1], torch.tensor(step), atol=1e-4)  # the velocity after the change


def test_consistent_targets_keep_the_truth_where_the_context_shows_no_shape(planted):
    """A clip whose sampled context shows no shape cannot say where to continue from: its targets stay the
    clip's true later latents, bit for bit, its context the sampled one."""
    _, _, true, sampled, out, found, context, _, _ = planted
    assert found.tolist() == [True, False]
    assert torch.equal(out[1, context:], true[1, context:]) and torch.equal(out[1, :context], sampled[1, :context])
    assert not torch.allclose(out[0, context:], true[0, context:], atol=1e-2)


def test_consistent_targets_shortcuts_agree_with_the_whole_decode_and_encode():
    """`consistent_targets` decodes only the context's last `CONTEXT_DECODE_LATENTS` latent frames and encodes
    the re-rendered clip from `TARGET_WARMUP_LATENTS` before the context's end (cold caches); with the shipped
    VAE, on a demo-world clip whose context is longer than both, that is the whole decode and encode
    within what scripts/experiments/consistent_targets_cost.py measured: the context's last frame's centroid
    within 0.1 px (measured: 0.034 at most), the targets within 3% relative L2 (measured: 1.4% at most) and
    decoded after the same context within 0.3 px (measured: 0.14 at most). Several latent frames per VAE call
    (a GPU's `VAE_PER_CALL`) gives the same targets up to float rounding."""
    from longlive.demo_world import DemoWorld, foreground_centroid
    from longlive.vae import StreamingVAE
    from longlive.weights import load_vae

    vae = load_vae(PRESETS["demo"].vae, REPO / "demo_model" / "vae", "cpu", torch.float32)
    decode, warmup = train_demo.CONTEXT_DECODE_LATENTS, train_demo.TARGET_WARMUP_LATENTS
    context = 3 * (max(decode, warmup) // 3 + 1)  # a block boundary past both: the shortcuts cut
    world = DemoWorld(seed=11, num_frames=4 * (context + 3) - 3, change_prob=0.5)
    videos, _ = world.batch(0, 1)
    latents, stories = train_demo.encode_latents(vae, videos), [world.story(0)]

    stream = StreamingVAE(vae)
    whole = foreground_centroid(stream.decode(latents[:, :context])[:, :, -1:][0])  # the context's last frame
    cache = list(stream._decoder_cache)  # the decoder after the context, for the targets below
    short = foreground_centroid(train_demo.context_end_frames(vae, latents, context, decode).transpose(0, 1))
    assert not whole.isnan().any() and (short - whole).norm(dim=1).max() < 0.1, (short, whole)

    reference, found = train_demo.consistent_targets(vae, latents, context, stories, None, None)
    out, found_short = train_demo.consistent_targets(vae, latents, context, stories)
    assert found.all() and found_short.all()
    assert torch.equal(out[:, :context], latents[:, :context])
    targets, shortcut = reference[:, context:], out[:, context:]
    assert float((shortcut - targets).norm() / targets.norm()) < 0.03
    decoded = []
    for latents_after in (targets, shortcut):
        stream._decoder_cache = list(cache)  # the same context's cache for both
        decoded.append(foreground_centroid(stream.decode(latents_after)[0]))
    assert (decoded[0] - decoded[1]).norm(dim=1).max() < 0.3

    batched, _ = train_demo.consistent_targets(vae, latents, context, stories, per_call=train_demo.VAE_PER_CALL)
    torch.testing.assert_close(batched, out, atol=1e-4, rtol=0)


def test_true_rollout_targets_are_the_step_as_before(trained, tmp_path, caplog):
    """`--rollout_targets true` (the default) is the rollout step as it was: the clip's true later blocks
    after the sampled context, the same random stream, the same loss; `consistent` changes it (a batch
    whose clips are the world's first two, the tiny VAE's decode finding a shape in both)."""
    models, _, _, _ = trained
    cfg = tiny_train_config(tmp_path, clip_latent_frames=12, rollout_prob=1.0, generator_steps=1)
    clips = train_demo.world(cfg, stream=2, num_frames=cfg.generator_video_frames)
    videos, captions = clips.batch(0, 2)
    batch = train_demo.Batch(train_demo.encode_latents(models.vae, videos), captions, [0, 1])

    def step(targets):
        return train_a_copy(models, dataclass_replace(cfg, rollout_targets=targets), [batch], 3, clips=clips)[1][0]

    # The step as written before `rollout_targets`, in full.
    generator, rng = copy.deepcopy(models.generator).train(), torch.Generator().manual_seed(3)
    text = train_demo.encode_text(
        models.text_encoder.eval(), models.tokenizer, captions, models.preset.generator.text_len
    )
    assert torch.rand((), generator=rng) < 1.0
    blocks = train_demo.rollout_blocks(cfg, 12, rng)
    latents = train_demo.rollout_context(generator, batch.latents, text, cfg, blocks, rng)
    context = sum(train_demo.block_sizes(cfg, 12)[:blocks])
    before = float(train_demo.diffusion_forcing_loss(generator, latents, text, cfg, rng, None, context))
    # (Equal up to float rounding: with autograd on, as in the loop, the CPU may pick other kernels.)
    assert step("true") == pytest.approx(before, rel=1e-6, abs=0)
    with caplog.at_level("INFO", logger="train_demo"):
        assert step("consistent") != pytest.approx(before, rel=1e-4, abs=0)  # measured: 8e-4 apart
    assert "2 rolled-out clips, 0.0% kept their true targets" in caplog.text, caplog.text


def test_training_from_trained_weights_warms_the_learning_rate_up(trained, tmp_path):
    """A resumed generator (and a decoder fine-tune) starts with the learning rate warming up: AdamW's first
    step moves every weight by about the learning rate whatever its gradient (resuming the demo generator
    without it raised the loss by 44% for a few steps). From scratch, and with --warmup_steps 0, no warm-up."""
    models, _, _, _ = trained
    cfg = tiny_train_config(tmp_path, generator_steps=1, lr=1e-3, resume=True)
    videos, captions = train_demo.world(cfg, stream=2).batch(0, cfg.batch_size)
    batch = train_demo.encode_latents(models.vae, videos), captions

    def first_step_move(config) -> float:
        trial, _ = train_a_copy(models, config, [batch], 0)
        pairs = zip(trial.generator.parameters(), models.generator.parameters(), strict=True)
        return max(float((p - b).abs().max()) for p, b in pairs)

    resumed, cold = first_step_move(cfg), first_step_move(dataclass_replace(cfg, warmup_steps=0))
    assert cold > 0.5 * cfg.lr  # Adam's first step: about lr for a weight with any gradient
    assert resumed < 1.5 * cfg.lr / train_demo.WARMUP_FROM_TRAINED
    assert first_step_move(dataclass_replace(cfg, resume=False)) == pytest.approx(cold)

    schedule = train_demo.warmed_up(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), cfg, True)
    rates = []
    for _ in range(train_demo.WARMUP_FROM_TRAINED + 2):
        rates.append(schedule.get_last_lr()[0])
        schedule.optimizer.step()
        schedule.step()
    assert rates[0] == pytest.approx(1 / train_demo.WARMUP_FROM_TRAINED) and rates[-2:] == [1.0, 1.0]
    stage_cfg = dataclass_replace(cfg, stage="decoder")
    assert train_demo.warmed_up(torch.optim.SGD([torch.zeros(1)], lr=1.0), stage_cfg, True).get_last_lr() == [
        1 / train_demo.WARMUP_FROM_TRAINED
    ]


def test_latent_foreground_weights_find_the_shape_and_weigh_the_loss(planted, trained, tmp_path):
    """`--latent_foreground_weight W`: on the shipped demo VAE's latents of a red square, against those of the
    empty background, the heaviest latent position of every frame is at or next to the square's centroid's
    cell (which weighs at least half as much) and the background about 1; the loss changes with W and is the
    plain mean without a background."""
    vae, videos, true = planted[:3]
    cfg = tiny_train_config(tmp_path, height=64, width=64, num_latent_frames=true.shape[1])
    background = train_demo.background_latents(vae, cfg, torch.device("cpu"))
    assert background.shape == (1, *true.shape[1:])
    weights = train_demo.latent_foreground_weights(true[:1], background, 10.0)[0]  # [F, h, w], the square
    assert weights.amax() == pytest.approx(10.0) and weights.amin() >= 1.0
    assert float(weights.median()) < 2.0  # most positions are background
    stride = vae.config.scale_factor_spatial
    for frame in range(true.shape[1]):
        video_frame = max(0, 4 * frame - 2)  # a latent frame's middle video frame (frame 0: itself)
        row, col = train_demo.foreground_centroid(videos[0, :, video_frame : video_frame + 1])[0].tolist()
        cell, at = int(weights[frame].argmax()), (int(row // stride), int(col // stride))
        assert max(abs(cell // weights.shape[-1] - at[0]), abs(cell % weights.shape[-1] - at[1])) <= 1, frame
        assert weights[frame][at] >= 0.5 * weights[frame].amax(), frame  # the centroid's cell weighs much

    models = trained[0]
    cfg = tiny_train_config(tmp_path)
    videos, captions = train_demo.world(cfg, stream=2).batch(0, cfg.batch_size)
    latents = train_demo.encode_latents(models.vae, videos)
    text = train_demo.encode_text(models.text_encoder, models.tokenizer, captions, models.preset.generator.text_len)
    empty = train_demo.background_latents(models.vae, cfg, torch.device("cpu"))

    def loss(weight: float, background) -> float:
        config = dataclass_replace(cfg, latent_foreground_weight=weight)
        rng = torch.Generator().manual_seed(5)
        args = (models.generator, latents, text, config, rng, None, 0, background)
        return float(train_demo.diffusion_forcing_loss(*args))

    plain = loss(1.0, None)
    assert loss(1.0, empty) == pytest.approx(plain, rel=1e-5)  # weight 1: every position alike
    assert loss(10.0, empty) != pytest.approx(plain, rel=1e-3)
    config = dataclass_replace(cfg, latent_foreground_weight=10.0, generator_steps=1)
    _, (step_loss,) = train_a_copy(models, config, [(latents, captions)], 5)
    assert step_loss == pytest.approx(loss(10.0, empty), rel=1e-4)  # the loop weighs as the loss does


def test_average_demo_weights_writes_the_mean_of_the_models(tmp_path, monkeypatch):
    """scripts/experiments/average_demo_weights.py: the generator's and text encoder's tensors are the means of
    the models' (integer tensors and every other file from the first); models of other shapes are refused."""
    from safetensors.torch import save_file

    soup = script_module("scripts/experiments/average_demo_weights.py")
    models = []
    for i, (weight, step) in enumerate(((1.0, 3), (4.0, 5))):
        folder = tmp_path / f"m{i}"
        for rel in soup.AVERAGED:
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            save_file({"w": torch.full((2, 3), weight), "step": torch.tensor([step])}, folder / rel)
        (folder / "vae").mkdir()
        (folder / "vae" / "note.txt").write_text(f"vae {i}")
        models.append(str(folder))
    out = tmp_path / "soup"
    monkeypatch.setattr("sys.argv", ["average_demo_weights.py", str(out), *models])
    soup.main()
    for rel in soup.AVERAGED:
        state = load_file(out / rel)
        assert torch.equal(state["w"], torch.full((2, 3), 2.5)) and torch.equal(state["step"], torch.tensor([3]))
    assert (out / "vae" / "note.txt").read_text() == "vae 0"
    with pytest.raises(SystemExit, match="differ in their tensors"):
        soup.average([{"w": torch.zeros(2)}, {"w": torch.zeros(3)}])


def test_hurried_context_moves_at_its_factor_and_arrives_where_the_world_has_the_shape():
    """`--context_speed_jitter`: a clip's first frames show its shape `factor` times as fast along the same
    line, arriving at frame `frames` where the clip has it; from there on the clip is unchanged."""
    from longlive.demo_world import DemoWorld, foreground_centroid, hurried_context, hurried_start

    world, frames, factor, checked = DemoWorld(3, 45), 17, 1.2, 0
    for index in range(80):
        clip = world.clip(index)
        video = hurried_context(clip, frames, factor)
        if video is None:
            continue
        checked += 1
        assert torch.equal(video[:, frames:], clip.video[:, frames:])
        arrival = clip.trajectory()[frames]
        start = hurried_start(clip.scene, clip.change, frames, factor, 64, 64)
        step = torch.tensor(start.velocity)
        assert step.norm() == pytest.approx(factor * arrival.speed)
        assert torch.tensor(start.position) + frames * step == pytest.approx(torch.tensor(arrival.position))
        moved = foreground_centroid(video[:, :frames]).diff(dim=0).norm(dim=1)  # px per frame, as rendered
        assert moved.mean() == pytest.approx(factor * arrival.speed, abs=0.1)
    assert checked >= 5


@pytest.mark.parametrize("offset_px", [0.0, 1.0])
def test_context_jitter_masks_the_clips_it_hurried(tmp_path, offset_px):
    """The training step's context counts (no loss there) are the latent frames the bank's renderer hurried
    (or, with `context_offset_px`, shifted where no hurried run fits), clip by clip, and such a clip's video
    differs from the world's in those frames only."""
    from longlive.demo_world import hurried_start

    cfg = tiny_train_config(
        tmp_path,
        num_latent_frames=6,
        context_speed_jitter=0.3,
        context_jitter_prob=0.7,
        context_offset_px=offset_px,
    )
    clips = train_demo.world(cfg, stream=2)
    jitter = train_demo.context_jitter(cfg, clips)
    counts = jitter.context_frames(range(30), clips)
    assert 0 < (counts > 0).sum() < 30 and set(counts.tolist()) <= {0, 3}  # whole blocks: the first of two
    if offset_px:  # every clip drawn gets its context: shifted where no hurried run fits
        assert (counts > 0).sum() == sum(jitter.context(i) is not None for i in range(30))
    for index in range(30):
        clip = clips.clip(index)
        video, hurried = jitter.apply(clip, index)
        assert hurried == counts[index]
        assert torch.equal(video[:, max(4 * hurried - 3, 0) :], clip.video[:, max(4 * hurried - 3, 0) :])
        if hurried:  # a hurried context always shows; a shift by under half a pixel may move no pixel centre
            # across a shape's edge (on the lattice of whole cells every edge lies on a pixel boundary)
            latent_frames, factor, offset = jitter.context(index)
            start = hurried_start(*clips.story(index), 4 * latent_frames - 3, factor, clips.height, clips.width)
            hidden = start is None and max(map(abs, offset)) < 0.5
            assert hidden or not torch.equal(video, clip.video)
    assert train_demo.context_jitter(tiny_train_config(tmp_path), clips) is None  # off by default


def test_shifted_context_shows_the_shape_offset_and_the_world_after():
    """`--context_offset_px`: a clip's first frames show its shape `offset` px off where the world has it, with
    its bounces; from frame `frames` on the clip is unchanged."""
    from longlive.demo_world import DemoWorld, foreground_centroid, shifted_context

    clip, frames, offset = DemoWorld(3, 45).clip(0), 17, (1.0, -0.5)  # whole and half pixels: the pixels show them
    video = shifted_context(clip, frames, offset)
    assert torch.equal(video[:, frames:], clip.video[:, frames:])
    moved = foreground_centroid(video[:, :frames]) - foreground_centroid(clip.video[:, :frames])
    assert moved.mean(0).tolist() == pytest.approx(list(offset), abs=0.15)


def test_creeping_context_keeps_the_sinks_and_drifts_to_the_offset():
    """`--context_creep`: a shifted context leaves the frames before `creep_from` (the sinks) where the world has
    them, then creeps off linearly to the whole offset at its last frame, within the 0.3 px of drawing a shape
    with hard edges (a ramp two frames early or late is 0.4 px off); from frame `frames` on the clip is
    unchanged. `ContextJitter` with `creep_after` gives every context at least one block after the true frames,
    and renders it so: the sinks' frames as the world has them, the context's last frame off by its offset."""
    from longlive.demo_world import DemoWorld, foreground_centroid, shifted_context

    clip, frames, offset, creep_from = DemoWorld(3, 45).clip(0), 33, (2.0, -2.0), 9
    video = shifted_context(clip, frames, offset, creep_from)
    assert torch.equal(video[:, :creep_from], clip.video[:, :creep_from])
    assert torch.equal(video[:, frames:], clip.video[:, frames:])
    moved = (foreground_centroid(video[:, :frames]) - foreground_centroid(clip.video[:, :frames])).numpy()
    shares = np.clip((np.arange(frames) - creep_from + 1) / (frames - creep_from), 0.0, 1.0)
    assert np.abs(moved - shares[:, None] * np.array(offset)).max() <= 0.3
    with pytest.raises(ValueError, match="creep_from"):
        shifted_context(clip, frames, offset, frames)
    jitter = train_demo.ContextJitter(
        seed=5, latent_frames=12, block=3, jitter=0.0, prob=1.0, offset_px=3.0, creep_after=3
    )
    world = DemoWorld(7, 45)
    for index in range(8):
        latent_frames, _, shift = jitter.context(index)
        assert latent_frames >= 6, latent_frames  # the sinks' block and at least one creeping block
        clip = world.clip(index)
        shown, count = jitter.apply(clip, index)
        assert count == latent_frames
        assert torch.equal(shown[:, :9], clip.video[:, :9])  # latent frames 0-2: video frames 0-8
        last = train_demo.first_video_frame(latent_frames) - 1
        off = foreground_centroid(shown[:, last : last + 1]) - foreground_centroid(clip.video[:, last : last + 1])
        assert off[0].tolist() == pytest.approx(list(shift), abs=0.5)


def test_turn_creep_starts_at_the_turn_and_runs_along_the_old_axis():
    """`--turn_creep`: a shifted context that reaches a latent frame or more past a change of direction keeps every
    frame before the change where the world has it and creeps from there along the axis the shape moved on
    before the turn (as the rendered frames show it), the other axis left on the path, to the drawn offset at
    its last frame; the continuation is the world's own. Contexts with no such change creep from the sinks to
    their own offset as before; a share below 1 leaves some turns to them too; and the option refuses to run
    without an offset. `--turn_jump` puts the whole offset on the frames from the change on, at once."""
    from longlive.demo_world import foreground_centroid, shifted_context

    cfg = train_demo.TrainConfig(switch_anywhere=True, clip_latent_frames=12, change_prob=1.0)
    world = train_demo.switch_world(cfg, stream=1)
    settings = dict(seed=5, latent_frames=12, block=3, jitter=0.0, prob=1.0, offset_px=3.0, creep_after=3)
    jitter = train_demo.ContextJitter(**settings, turn_creep=1.0)
    half = train_demo.ContextJitter(**settings, turn_creep=0.5)
    jumps = train_demo.ContextJitter(**settings, turn_creep=1.0, turn_jump=True)
    turned, plain, visible, halves = 0, 0, 0, set()
    for index in range(40):
        clip = world.clip(index)
        latent_frames, _, shift = jitter.context(index)
        frames = train_demo.first_video_frame(latent_frames)
        shown, count = jitter.apply(clip, index)
        assert count == latent_frames
        assert torch.equal(shown[:, frames:], clip.video[:, frames:])
        moved = (foreground_centroid(shown[:, :frames]) - foreground_centroid(clip.video[:, :frames])).numpy()
        change = clip.change
        if change.direction is None or change.frame + train_demo.VAE_STRIDE > frames:  # no turn a latent frame in
            assert jitter.turn_offset(clip, index, frames) is None
            assert torch.equal(shown, shifted_context(clip, frames, shift, creep_from=9))  # the sinks' creep
            plain += 1
            continue
        turned += 1
        halves.add(half.turn_offset(clip, index, frames) is None)
        creep_from, offset = jitter.turn_offset(clip, index, frames)
        assert creep_from == change.frame
        before = foreground_centroid(clip.video[:, change.frame - 4 : change.frame])  # a bounce stalls a step
        old_axis = int(before.diff(dim=0).abs().sum(0).argmax())  # the axis the shape moved on before the turn
        assert offset[1 - old_axis] == 0.0 and abs(offset[old_axis]) <= 3.0
        assert torch.equal(shown, shifted_context(clip, frames, offset, creep_from))
        assert torch.equal(shown[:, : change.frame], clip.video[:, : change.frame])
        assert np.abs(moved[:, 1 - old_axis]).max() <= 0.3  # nothing off the path across the old axis
        assert moved[-1].tolist() == pytest.approx(list(offset), abs=0.5)
        visible += abs(moved[-1, old_axis]) >= 1
        jumped, _ = jumps.apply(clip, index)  # --turn_jump: the whole offset from the change on, at once
        assert torch.equal(jumped, shifted_context(clip, frames, offset, creep_from, jump=True))
        assert torch.equal(jumped[:, : change.frame], clip.video[:, : change.frame])
        at_turn = foreground_centroid(jumped[:, change.frame : change.frame + 1])
        truth = foreground_centroid(clip.video[:, change.frame : change.frame + 1])
        assert (at_turn - truth)[0].tolist() == pytest.approx(list(offset), abs=0.5)
    assert turned >= 5 and plain >= 5 and visible >= 3, (turned, plain, visible)
    assert halves == {True, False}  # turn_creep 0.5: some turns creep from the turn, some from the sinks
    with pytest.raises(SystemExit, match="--turn_creep"):
        train_demo.run(train_demo.TrainConfig(turn_creep=0.5, context_offset_px=0.0))
    with pytest.raises(SystemExit, match="--turn_jump"):
        train_demo.run(train_demo.TrainConfig(turn_jump=True, context_offset_px=3.0))
    with pytest.raises(ValueError, match="jump needs creep_from"):
        shifted_context(clip, 33, (1.0, 0.0), jump=True)


def test_decoder_stage_switches_where_the_generator_does():
    """`--stage decoder --switch_anywhere`: the decoder's clips (a stream no other stage reads) are as long as
    the generator's and change at any block boundary after the first, as `switch_world` draws them; without
    it, they change at change_latent_frame of num_latent_frames-long clips, as before."""
    cfg = train_demo.TrainConfig(switch_anywhere=True, clip_latent_frames=12, change_prob=1.0)
    clips = train_demo.decoder_world(cfg)
    assert clips.seed == train_demo.DECODER_STREAM and clips.num_frames == 45
    assert tuple(clips.change_frames) == (9, 21, 33)  # latent frames 3, 6, 9: the blocks after the first
    assert {clips.clip(i).change.frame for i in range(40)} == {9, 21, 33}
    plain = train_demo.decoder_world(train_demo.TrainConfig())
    assert plain.seed == train_demo.DECODER_STREAM and plain.change_frames is None and plain.change_frame == 9


def test_weight_average_is_the_exponential_moving_average_of_the_steps():
    """`--ema_decay d`: after steps with parameters p1, p2, p3 the average is p1 blended as d * avg + (1 - d) * p
    at each later step (the first update takes p1 as it is), and it is copied into the module at the end."""
    module = torch.nn.Linear(2, 1, bias=False)
    average = train_demo.WeightAverage([module], 0.75)
    expected = None
    for value in (1.0, 2.0, 4.0):
        with torch.no_grad():
            module.weight.fill_(value)
        average.update()
        expected = value if expected is None else 0.75 * expected + 0.25 * value
    average.copy_into_modules()
    assert torch.allclose(module.weight, torch.full((1, 2), expected))  # 1, 1.25, 1.9375
