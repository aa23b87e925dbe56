"""`fold_vae_ahead`: the folded convolutions' 2D weights made before the call, so that the compiled decoder
(whole, or the split decode's stages) is one graph per cache shape, against the 3D reference, the folded
convolutions that break the graph, and the eager decode."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config
from diffusers.models.autoencoders.autoencoder_kl_wan import WanRMS_norm, WanUpBlock
from torch._dynamo.utils import counters

from longlive.components import build_streaming_vae
from longlive.presets import PRESETS
from longlive.vae import StreamingVAE, build_vae, compile_decoder
from longlive.vae_convs import FoldedCausalConv3d, fold_causal_convs, own_new_caches
from longlive.vae_norms import fuse_vae_norms
from longlive.vae_split import RowShare, compile_stages

pytestmark = pytest.mark.usefixtures("one_thread")


def _vae(seed: int = 0, fold: str | None = None):
    """The tiny VAE, norms away from their initial gamma, convolutions 3D (None), folded ("break") or
    folded ahead ("ahead"), norms fused when folded (the switches the GPU runs together)."""
    torch.manual_seed(seed)
    vae = build_vae(PRESETS["tiny"].vae).eval()
    for norm in vae.modules():
        if isinstance(norm, WanRMS_norm):
            norm.gamma.data.uniform_(0.5, 1.5)
    if fold is not None:
        fold_causal_convs(vae, ahead=fold == "ahead")
        fuse_vae_norms(vae)
    return vae


def _latents(vae, frames: int = 3, hw: tuple[int, int] = (4, 6)) -> torch.Tensor:
    return torch.randn(1, frames, vae.config.z_dim, *hw, generator=torch.Generator().manual_seed(2))


def _decode(stream: StreamingVAE, latents: torch.Tensor) -> torch.Tensor:
    """A new video, decoded in two calls (the first latent frame, then the rest: all three cache shapes)."""
    stream.reset_decoder()
    return torch.cat([stream.decode(latents[:, :1]), stream.decode(latents[:, 1:])], dim=2)


def _compiled_run(stream: StreamingVAE, latents: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """The decode of a fresh compilation, with the graphs and the graph breaks dynamo counted for it."""
    torch._dynamo.reset()
    counters.clear()
    stream.reset_decoder()
    frames = stream.decode(latents)  # one decoder call per latent frame
    return frames, int(counters["stats"]["unique_graphs"]), sum(counters["graph_break"].values())


def test_folded_ahead_matches_the_3d_and_the_folded_convolutions():
    """Eager, folded ahead = folded = 3D within 1e-5 (float32), streamed encode and decode; the state dict
    is the 3D model's, keys and values (the folded weights are not saved); the config builds it."""
    reference = _vae()
    latents = _latents(reference)
    video = torch.rand(1, 3, 9, 32, 48, generator=torch.Generator().manual_seed(1)) * 2 - 1
    expected = (StreamingVAE(reference).encode(video), _decode(StreamingVAE(reference), latents))
    for fold in ("break", "ahead"):
        vae = _vae(fold=fold)
        assert sum(isinstance(m, FoldedCausalConv3d) and m.ahead == (fold == "ahead") for m in vae.modules()) > 0
        state = vae.state_dict()
        assert state.keys() == reference.state_dict().keys()
        assert all(torch.equal(state[k], v) for k, v in reference.state_dict().items())
        actual = (StreamingVAE(vae).encode(video), _decode(StreamingVAE(vae), latents))
        for got, want in zip(actual, expected, strict=True):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    built = build_streaming_vae(tiny_config("fold_vae_convs=true", "fold_vae_ahead=true"), torch.device("cpu"))
    assert all(m.ahead for m in built.vae.modules() if isinstance(m, FoldedCausalConv3d))


def test_folded_ahead_compiles_the_decoder_without_graph_breaks():
    """compile_vae (dynamo's graphs, `backend="eager"`): folded as before, the decoder breaks at every
    convolution; folded ahead, it is one graph per cache shape and no break, with the eager frames."""
    vae = _vae(fold="break")
    latents = _latents(vae)
    expected = _decode(StreamingVAE(vae), latents)
    folded = sum(isinstance(m, FoldedCausalConv3d) for m in vae.decoder.modules())
    compile_decoder(vae, backend="eager")
    frames, graphs, breaks = _compiled_run(StreamingVAE(vae), latents[:, :1])  # one call: enough to count
    torch.testing.assert_close(frames, expected[:, :, :1], atol=1e-5, rtol=0)
    assert breaks >= folded and graphs > folded

    vae = _vae(fold="ahead")
    compile_decoder(vae, backend="eager")
    compile_decoder(vae, backend="eager")  # again: the caches' copies are not stacked twice
    assert type(vae.decoder).__name__ == "OwnCachesWanDecoder3d"
    frames, graphs, breaks = _compiled_run(StreamingVAE(vae), latents)
    torch.testing.assert_close(frames, expected, atol=1e-5, rtol=0)
    assert (graphs, breaks) == (3, 0)  # the three cache shapes: none, after the first latent frame, steady


def test_split_stages_folded_ahead_compile_without_graph_breaks():
    """The split decode (`parallel.split_decode`) folded ahead: each compiled stage one graph per cache
    shape, no break, and the part's rows as the whole eager decode's."""
    vae = _vae(fold="ahead")
    latents = _latents(vae, hw=(5, 3))
    whole = _decode(StreamingVAE(vae), latents)
    stream = StreamingVAE(vae, RowShare(1, 2))
    start, stop = stream.row_plan(5).output
    eager = _decode(stream, latents)
    compile_stages(vae.decoder, backend="eager")
    frames, graphs, breaks = _compiled_run(stream, latents)
    cached_stages = 1 + len(vae.decoder.up_blocks)  # the mid block, the up blocks: 3 cache shapes each
    assert breaks == 0 and graphs == 3 * cached_stages + 2  # norm_out: 1 frame, then 4 a call
    torch.testing.assert_close(frames, eager, atol=1e-6, rtol=0)
    torch.testing.assert_close(frames, whole[..., start:stop, :], atol=1e-5, rtol=0)


def test_compiled_decoder_folded_ahead_sees_new_weights():
    """The compiled graph reads the folded buffers as they are: a state dict loaded after compiling, and a
    weight changed in place (seen when the next video starts), are what it decodes with."""
    vae, other = _vae(fold="ahead"), _vae(seed=5)
    latents = _latents(vae)
    compile_decoder(vae, backend="eager")
    stream = StreamingVAE(vae)
    _decode(stream, latents)  # compiled with the first weights
    vae.load_state_dict(other.state_dict())
    torch.testing.assert_close(_decode(stream, latents), _decode(StreamingVAE(other), latents), atol=1e-5, rtol=0)
    with torch.no_grad():
        vae.decoder.conv_in.weight.mul_(2)
        other.decoder.conv_in.weight.mul_(2)
    torch.testing.assert_close(_decode(stream, latents), _decode(StreamingVAE(other), latents), atol=1e-5, rtol=0)


@pytest.mark.parametrize("own", [True, False], ids=["own-caches", "inductor-views"])
def test_cached_frames_keep_no_input_alive(own):
    """Inductor, one graph: the cached frames a call leaves (diffusers' clone of the input's last 2 frames)
    are copies of their own with `own_new_caches`; without it inductor drops the clone and each cache is a
    view holding its convolution's whole input (the 1.14 GiB of BENCHMARKS.md, 2026-11-24). The frames
    equal the eager ones either way."""
    torch.manual_seed(0)
    block = WanUpBlock(8, 8, num_res_blocks=0).eval().requires_grad_(False)  # one residual block: 2 caches
    fold_causal_convs(block, ahead=True)
    fuse_vae_norms(block)
    inputs = [torch.randn(1, 8, 4, 6, 6).contiguous(memory_format=torch.channels_last_3d) for _ in range(2)]

    def run() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        cache: list = [None, None]
        return [block(x, feat_cache=cache, feat_idx=[0]) for x in inputs], cache

    expected, _ = run()
    if own:
        own_new_caches(block)
    torch._dynamo.reset()
    block.compile(dynamic=False)
    frames, cache = run()
    for got, want in zip(frames, expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    held = [entry.untyped_storage().nbytes() / (entry.numel() * entry.element_size()) for entry in cache]
    assert all(h == 1 for h in held) if own else all(h >= 2 for h in held)  # 4 input frames or more for 2
