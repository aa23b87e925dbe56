"""The streamed decode split by rows (`longlive.vae_split`) against the whole-frame decode, in one process:
each part decoded in turn with its own caches, through the first latent frame and the steady state."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from conftest import tiny_config
from diffusers.models.autoencoders.autoencoder_kl_wan import WanRMS_norm

from longlive.components import build_streaming_vae
from longlive.presets import PRESETS
from longlive.vae import StreamingVAE, build_vae
from longlive.vae_convs import fold_causal_convs
from longlive.vae_norms import fuse_vae_norms
from longlive.vae_split import RowShare, compile_stages, plan_rows, share_rows

pytestmark = pytest.mark.usefixtures("one_thread")
LATENT_HW = (13, 3)  # an odd height: parts of 7 and 6 (or 5, 4, 4) latent rows, 104 output rows


@pytest.fixture(scope="module")
def vae():
    """The tiny VAE (the published structure, narrower) with norms away from their initial gamma."""
    torch.manual_seed(0)
    vae = build_vae(PRESETS["tiny"].vae)
    for norm in vae.modules():
        if isinstance(norm, WanRMS_norm):
            norm.gamma.data.uniform_(0.5, 1.5)
    return vae.eval()


def _latents(vae, frames: int = 5, seed: int = 2) -> torch.Tensor:
    return torch.randn(1, frames, vae.config.z_dim, *LATENT_HW, generator=torch.Generator().manual_seed(seed))


def _streamed(stream: StreamingVAE, latents: torch.Tensor) -> torch.Tensor:
    """Three calls (2 latent frames, 1, 2): the first chunk, then the caches carried into the steady state."""
    return torch.cat([stream.decode(latents[:, a:b]) for a, b in ((0, 2), (2, 3), (3, 5))], dim=2)


def _split(vae, latents: torch.Tensor, parts: int) -> list[torch.Tensor]:
    return [_streamed(StreamingVAE(vae, RowShare(part, parts)), latents) for part in range(parts)]


@pytest.mark.parametrize("parts", [2, 3])
def test_split_decode_matches_the_whole_frame(vae, parts):
    """Each part's rows, decoded alone through its own caches, are the whole-frame decode's rows; the parts
    tile the frame in order. Bit-for-bit in float32 on CPU up to the convolutions' order of sums."""
    latents = _latents(vae)
    expected = _streamed(StreamingVAE(vae), latents)
    pieces = _split(vae, latents, parts)
    assert expected.shape == (1, 3, 1 + 4 * 4, 8 * LATENT_HW[0], 8 * LATENT_HW[1])
    rows = [StreamingVAE(vae, RowShare(p, parts)).row_plan(LATENT_HW[0]).output for p in range(parts)]
    assert rows[0][0] == 0 and rows[-1][1] == expected.shape[-2]
    assert all(a[1] == b[0] for a, b in zip(rows, rows[1:], strict=False))  # consecutive, no overlap
    for piece, (start, stop) in zip(pieces, rows, strict=True):
        assert piece.shape[-2] == stop - start
    torch.testing.assert_close(torch.cat(pieces, dim=-2), expected, atol=1e-6, rtol=0)
    assert expected.std() > 0.05  # a real signal


def test_a_halo_one_row_short_is_wrong(vae):
    """The plan's halo is needed: one row less at the head's input (the last convolution's reach) changes
    the part's edge rows. (The comparison above can fail.)"""
    latents = _latents(vae, frames=2)
    expected = _streamed_two(StreamingVAE(vae), latents)
    stream = StreamingVAE(vae, RowShare(0, 2))
    plan = stream.row_plan(LATENT_HW[0])
    start, stop = plan.head_input
    stream._row_plans[LATENT_HW[0]] = replace(plan, head_input=(start, stop - 1))
    start, stop = plan.output
    with pytest.raises(AssertionError):
        torch.testing.assert_close(_streamed_two(stream, latents), expected[..., start:stop, :], atol=1e-6, rtol=0)


def _streamed_two(stream: StreamingVAE, latents: torch.Tensor) -> torch.Tensor:
    return torch.cat([stream.decode(latents[:, :1]), stream.decode(latents[:, 1:])], dim=2)


@pytest.mark.parametrize("fold", [False, True], ids=["3d-convs", "folded-convs"])
def test_split_decode_with_the_vae_switches(fold):
    """fold_vae_convs and fuse_vae_norms: the split decode matches the whole one with the same switches."""
    torch.manual_seed(1)
    vae = build_vae(PRESETS["tiny"].vae).eval()
    if fold:
        fold_causal_convs(vae)
    fuse_vae_norms(vae)
    latents = _latents(vae, seed=3)
    expected = _streamed(StreamingVAE(vae), latents)
    torch.testing.assert_close(torch.cat(_split(vae, latents, 2), dim=-2), expected, atol=1e-5, rtol=0)


def test_compiled_stages_match_eager(monkeypatch):
    """compile_vae under split_decode compiles the stages the split decode calls; the same rows as eager
    (the second part's: a slab cut inside the frame; its three cache shapes), every call compiled: from
    dynamo's default limit on graphs per function, which the folded convolutions' three cache shapes in
    six stages pass (past it dynamo would quietly run them eagerly; here it raises)."""
    torch.manual_seed(2)
    vae = build_vae(PRESETS["tiny"].vae).eval()
    fold_causal_convs(vae)
    fuse_vae_norms(vae)
    latents = _latents(vae, frames=3, seed=4)
    expected = _streamed_two(StreamingVAE(vae, RowShare(1, 2)), latents)
    torch._dynamo.reset()  # no graphs of other tests count against the limit
    monkeypatch.setattr(torch._dynamo.config, "cache_size_limit", 8)  # dynamo's default
    monkeypatch.setattr(torch._dynamo.config, "fail_on_recompile_limit_hit", True)
    compile_stages(vae.decoder)
    assert all(s._compiled_call_impl is not None for s in (vae.decoder.mid_block, *vae.decoder.up_blocks))
    actual = _streamed_two(StreamingVAE(vae, RowShare(1, 2)), latents)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)
    split = ("compile_vae=true", "parallel.sequence=2", "parallel.split_decode=true")
    built = build_streaming_vae(tiny_config(*split), torch.device("cpu")).vae.decoder
    assert built.mid_block._compiled_call_impl is not None and built._compiled_call_impl is None


def test_row_plan_reads_the_receptive_field_from_the_modules(vae):
    """The published structure (3 residual blocks of two 3x3 convolutions per up block, 2x upsampling with a
    3x3 convolution in three of four, a 3x3 conv_out): the halo at each boundary, worked by hand."""
    plan = plan_rows(vae.decoder, 60, RowShare(0, 2))
    assert plan.heights == (60, 120, 240, 480, 480)
    assert plan.output == (0, 240)
    assert plan.head_input == (0, 241)  # conv_out: 1 row
    # up block 3 (no upsampler): 3 resnets x 2 rows; block 2: conv 1 row at 480, /2, then 6 rows at 240 ...
    assert plan.stage_inputs[3] == (0, 247)
    assert plan.stage_inputs[2] == (0, 124 + 6)
    assert plan.stage_inputs[1] == (0, 66 + 6)
    assert plan.stage_inputs[0] == (0, 37 + 6)
    assert share_rows(13, 3) == [(0, 5), (5, 9), (9, 13)]
    with pytest.raises(ValueError, match="cannot split 2 latent rows into 3 parts"):
        share_rows(2, 3)
