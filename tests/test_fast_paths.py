"""Every speed switch against the eager reference path, within a stated tolerance."""

from __future__ import annotations

import gc
import os
import weakref

import pytest
import torch
from conftest import REPO, tiny_config
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d, WanRMS_norm, WanUpsample
from test_engine import LATENT_HW, cache_for, random_text

from longlive.components import build_streaming_vae
from longlive.config import ConfigError, load_config
from longlive.ffn import GeluEpilogueFFN, fusable, fuse_ffn_gelu
from longlive.fp8 import TARGETS, Float8Linear, convert_block_linears, quantize_rows
from longlive.pipeline import VideoConditionalPipeline, compile_blocks
from longlive.presets import PRESETS
from longlive.runner import CUDAGraphGenerator, GraphTable, _Graph
from longlive.text_encoder import byte_level_tokenizer
from longlive.vae import StreamingVAE, build_vae, compile_decoder
from longlive.vae_convs import fold_causal_convs
from longlive.vae_norms import fuse_vae_norms


def _rollout(model, latents, timesteps, text, block_sizes=(3, 3, 3)):
    """Blocks through a rolling window, then a recache as LongLive's: one unmasked pass over frames 4..8."""
    cache, outputs, start = cache_for(model, cache_frames=6, sink_frames=1), [], 0
    with torch.no_grad():
        for size in block_sizes:
            block = slice(start, start + size)
            outputs.append(model(latents[:, block], timesteps[:, block], text, cache, start))
            start += size
        frames = cache.start_recache("longlive")
        span = slice(frames.start, frames.stop)
        outputs.append(model(latents[:, span], timesteps[:, span] * 0, text, cache, frames.start))
    return torch.cat(outputs, dim=1), cache


def test_compiled_blocks_match_eager(tiny_model):
    """compile_generator: float32 outputs and cache contents within 1e-5 of eager through a rolling window
    and a recache pass."""
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 9, tiny_model.arch.in_channels, *LATENT_HW, generator=g)
    timesteps = torch.rand(1, 9, generator=g) * 1000
    text = tiny_model.prepare_text(random_text(tiny_model.arch))
    eager, eager_cache = _rollout(tiny_model, latents, timesteps, text)
    compile_blocks(tiny_model)
    compiled, compiled_cache = _rollout(tiny_model, latents, timesteps, text)
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=0)
    torch.testing.assert_close(compiled_cache.keys, eager_cache.keys, atol=1e-5, rtol=0)


def test_byte_level_tokenizer_is_deterministic():
    """Random tiny text encoders must give the same embeddings in every process (and on every rank)."""
    first, second = byte_level_tokenizer(), byte_level_tokenizer()
    assert first.get_vocab() == second.get_vocab()
    assert first("a red square").input_ids == second("a red square").input_ids


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
@pytest.mark.parametrize(("compiled", "infinite"), [(False, False), (True, False), (False, True), (True, True)])
def test_cuda_graphs_match_eager(compiled, infinite):
    """cuda_graphs: a whole video-conditional rollout (prompt switch, short blocks, rolling window) equals
    the same pipeline without graphs (float32), with absolute and window-relative RoPE (whose key table
    the graphs take as an input). Graphs of eager kernels replay them exactly (atol 1e-5);
    with compile, the graphed run may get other compiled kernels for a shape (static vs dynamic), which
    moved 3 of 5376 values by up to 2e-5 on an H100 (2026-11-23), hence atol 1e-4 there."""
    overrides = [
        "device=cuda",
        "num_output_frames=14",
        f"compile_generator={str(compiled).lower()}",
        f"model_kwargs.use_infinite_attention={str(infinite).lower()}",
    ]
    video = torch.rand(1, 3, 9, 32, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    plain = VideoConditionalPipeline.from_config(tiny_config(*overrides))
    graphed = VideoConditionalPipeline.from_config(tiny_config(*overrides, "cuda_graphs=true"))
    for seed in (0, 1):  # the second video replays the graphs captured during the first
        expected = plain("a red square", "a blue circle", video, seed=seed, decode=False).latents
        actual = graphed("a red square", "a blue circle", video, seed=seed, decode=False).latents
        torch.testing.assert_close(actual, expected, atol=1e-4 if compiled else 1e-5, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
@pytest.mark.parametrize("mode", ["longlive", "window"])
def test_cuda_graphs_match_eager_through_recaches(mode):
    """cuda_graphs with prompt switches: the recache passes run eagerly between graph replays (an early
    switch rewriting the sinks at frame 6, a late one at 9) and the rollout equals the plain one (float32)."""
    from longlive.pipeline import PromptSchedule

    overrides = ["device=cuda", f"recache_mode={mode}"]
    config = REPO / "configs" / "tiny_interactive.yaml"
    plain = VideoConditionalPipeline.from_config(load_config(config, overrides))
    graphed = VideoConditionalPipeline.from_config(load_config(config, [*overrides, "cuda_graphs=true"]))
    schedule = PromptSchedule(("a red square", "a blue circle", "a green square"), (4, 9))
    for seed in (0, 1):
        expected = torch.cat([r.latents for r in plain.stream_prompts(schedule, seed=seed, decode=False)], dim=1)
        actual = torch.cat([r.latents for r in graphed.stream_prompts(schedule, seed=seed, decode=False)], dim=1)
        torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)


def _stream_inputs(vae):
    """A 13-frame video and 4 latent frames (the decoder's three cache shapes) for the tiny VAE."""
    video = torch.rand(1, 3, 13, 32, 48, generator=torch.Generator().manual_seed(1)) * 2 - 1
    latents = torch.randn(1, 4, vae.config.z_dim, 4, 6, generator=torch.Generator().manual_seed(2))
    return video, latents


def _stream(vae, video, latents):
    """A streamed encode of `video` and decode of `latents`, each in two calls (caches carried)."""
    stream = StreamingVAE(vae)
    encoded = torch.cat([stream.encode(video[:, :, :5]), stream.encode(video[:, :, 5:])], dim=1)
    decoded = torch.cat([stream.decode(latents[:, :2]), stream.decode(latents[:, 2:])], dim=2)
    return encoded, decoded


def test_folded_vae_convs_match_the_3d_ones():
    """fold_vae_convs: every causal convolution but the encoder's time-strided ones runs as a 2D one;
    a streamed encode and decode (caches carried across calls) stay within 1e-5 of the 3D layers in
    float32, and the state dict is unchanged (the folded weight is not saved)."""
    torch.manual_seed(0)
    vae = build_vae(PRESETS["tiny"].vae)
    video, latents = _stream_inputs(vae)
    expected = _stream(vae, video, latents)
    keys = set(vae.state_dict())

    convs = [m for m in vae.modules() if isinstance(m, WanCausalConv3d)]
    assert fold_causal_convs(vae) == sum(conv.stride[0] == 1 for conv in convs) > 0
    assert set(vae.state_dict()) == keys
    for actual, reference in zip(_stream(vae, video, latents), expected, strict=True):
        torch.testing.assert_close(actual, reference, atol=1e-5, rtol=0)


def test_folded_vae_convs_follow_weights_loaded_after_folding():
    """The folded 2D weights are derived, not stored: a state dict loaded (or a dtype set) after folding
    is what the folded layers compute with."""
    torch.manual_seed(0)
    folded, other = build_vae(PRESETS["tiny"].vae), build_vae(PRESETS["tiny"].vae)
    latents = torch.randn(1, 3, folded.config.z_dim, 4, 6, generator=torch.Generator().manual_seed(2))
    fold_causal_convs(folded)
    StreamingVAE(folded).decode(latents)  # folds the first weights
    folded.load_state_dict(other.state_dict())
    torch.testing.assert_close(
        StreamingVAE(folded).decode(latents), StreamingVAE(other).decode(latents), atol=1e-5, rtol=0
    )
    folded, other = folded.double(), other.double()
    torch.testing.assert_close(
        StreamingVAE(folded).decode(latents), StreamingVAE(other).decode(latents), atol=1e-9, rtol=0
    )


def test_folded_vae_convs_in_inference_mode_and_under_training():
    """Weights made under inference_mode (no version counter) fold; weights that require grad train
    through the 3D layer (the folded copy is detached), with the same output."""
    with torch.inference_mode():
        torch.manual_seed(0)
        reference, folded = build_vae(PRESETS["tiny"].vae), build_vae(PRESETS["tiny"].vae)
        folded.load_state_dict(reference.state_dict())
        fold_causal_convs(folded)
        latents = torch.randn(1, 2, reference.config.z_dim, 4, 6)
        torch.testing.assert_close(StreamingVAE(folded).decode(latents), StreamingVAE(reference).decode(latents))

    conv = WanCausalConv3d(4, 5, 3, padding=1)
    x = torch.randn(1, 4, 3, 6, 6)
    expected = conv(x)
    fold_causal_convs(conv)
    out = conv(x)
    out.sum().backward()
    assert conv.weight.grad is not None
    torch.testing.assert_close(out, expected)


def _vae_with_random_norm_weights(seed: int = 0):
    """The tiny VAE with every norm's gamma away from its initial ones (a wrong scale must show)."""
    torch.manual_seed(seed)
    vae = build_vae(PRESETS["tiny"].vae)
    for norm in vae.modules():
        if isinstance(norm, WanRMS_norm):
            norm.gamma.data.uniform_(0.5, 1.5)
    return vae


@pytest.mark.parametrize("fold", [False, True], ids=["3d-convs", "folded-convs"])
def test_fused_vae_norms_match_diffusers_norms(fold):
    """fuse_vae_norms: every RMS norm becomes one rms_norm (+ SiLU); a streamed encode and decode stay
    within 1e-5 of diffusers' norms in float32, alone or with folded convolutions; state dict unchanged."""
    vae = _vae_with_random_norm_weights()
    video, latents = _stream_inputs(vae)
    expected = _stream(vae, video, latents)
    keys = set(vae.state_dict())

    norms = sum(isinstance(m, WanRMS_norm) for m in vae.modules())
    if fold:
        fold_causal_convs(vae)
    assert fuse_vae_norms(vae) == norms > 0
    assert not any(isinstance(m, torch.nn.SiLU) for m in vae.modules())  # every SiLU went into a norm
    assert set(vae.state_dict()) == keys
    for actual, reference in zip(_stream(vae, video, latents), expected, strict=True):
        torch.testing.assert_close(actual, reference, atol=1e-5, rtol=0)


def test_compiled_decoder_matches_eager():
    """compile_vae: a streamed decode through the compiled decoder (all three cache shapes: first latent
    frame, second, steady) stays within 1e-5 of the eager one in float32, after both other VAE switches;
    the state dict keys are unchanged."""
    vae = _vae_with_random_norm_weights()
    fold_causal_convs(vae)
    fuse_vae_norms(vae)
    _, latents = _stream_inputs(vae)
    keys = set(vae.state_dict())
    stream = StreamingVAE(vae)
    expected = [stream.decode(latents[:, :2]), stream.decode(latents[:, 2:])]
    compile_decoder(vae)
    assert vae.decoder._compiled_call_impl is not None
    assert set(vae.state_dict()) == keys
    stream.reset_decoder()
    for _ in range(2):  # the second video reuses the compiled graphs
        actual = [stream.decode(latents[:, :2]), stream.decode(latents[:, 2:])]
        for got, want in zip(actual, expected, strict=True):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
        stream.reset_decoder()
    assert build_streaming_vae(tiny_config("compile_vae=true"), torch.device("cpu")).vae.decoder._compiled_call_impl


def test_native_dtype_upsample_is_exact_in_bfloat16():
    """Nearest upsampling without the float32 round trip gives the very same bf16 values."""
    x = torch.randn(2, 5, 6, 7).to(torch.bfloat16)
    upsample = WanUpsample(scale_factor=(2.0, 2.0), mode="nearest-exact")
    expected = upsample(x)
    fuse_vae_norms(upsample)
    assert type(upsample) is not WanUpsample
    assert torch.equal(upsample(x), expected)


@pytest.mark.parametrize(
    ("switch", "fast_layer"), [("fold_vae_convs", "FoldedCausalConv3d"), ("fuse_vae_norms", "FusedRMSNorm")]
)
def test_vae_switch_keeps_the_pipeline_output(switch, fast_layer):
    """Each VAE switch end to end: it puts its layers in the pipeline's VAE, and a video-conditional run's
    frames stay within 1e-5 of the plain run's."""
    video = torch.rand(1, 3, 9, 32, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    frames = []
    for flag in (False, True):
        pipe = VideoConditionalPipeline.from_config(tiny_config("num_output_frames=6", f"{switch}={flag}".lower()))
        assert any(type(m).__name__ == fast_layer for m in pipe.vae.vae.modules()) == flag
        frames.append(pipe("a red square", "a blue circle", video, seed=0).frames)
    torch.testing.assert_close(frames[1], frames[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=[
                pytest.mark.gpu,
                pytest.mark.skipif(
                    not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9),
                    reason="float8 products need a CUDA GPU of compute capability 8.9+",
                ),
            ],
        ),
    ],
)
def test_float8_linear_applies_its_row_scales(device):
    """fp8_linears' layer. On CUDA, cuBLAS's float8 product (each row on its own scale) equals the product
    of the dequantized operands within bf16 rounding (1e-2; cuBLAS returns row-scaled products in bf16).
    On the CPU the layer computes that dequantized product itself (CPU `_scaled_mm` takes one scale per
    tensor), so there the bound below is the test: against the float layer every token, small or large,
    stays within the precision of float8 (3 mantissa bits)."""
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    linear = torch.nn.Linear(64, 48).to(device, dtype)
    x = (torch.randn(2, 5, 64) * torch.logspace(-2, 2, 5)[None, :, None]).to(device, dtype)  # tokens of unlike sizes
    fp8 = Float8Linear(linear)
    if device == "cuda":
        rows, scale = quantize_rows(x.reshape(-1, 64))
        dequantized = (rows.float() * scale) @ (fp8.weight.float() * fp8.weight_scale.t()).t() + linear.bias.float()
        torch.testing.assert_close(fp8(x).float(), dequantized.reshape(2, 5, 48), atol=1e-2, rtol=1e-2)
    expected = linear(x).float()
    per_token_error = (fp8(x).float() - expected).norm(dim=-1) / expected.norm(dim=-1)
    assert per_token_error.max() < 0.1  # every token, small or large, keeps its precision


def test_float8_linear_lets_the_float_weight_go():
    """Converting a trainable layer (as the generator's are while it is built) must not record autograd
    history: the float8 copy would keep the float weight, and a float32 copy of it, alive (seen on the
    H100 as 5.8 GiB more memory with fp8_linears than without)."""
    linear = torch.nn.Linear(64, 48)
    weight = weakref.ref(linear.weight)
    fp8 = Float8Linear(linear)
    assert fp8.weight.grad_fn is None and fp8.weight_scale.grad_fn is None
    del linear
    gc.collect()
    assert weight() is None


def test_fp8_linears_switch_stays_close_to_the_reference():
    """The switch end to end: every targeted linear of every block is float8, and a video-conditional
    rollout's latents keep a cosine of at least 0.99 with the reference path's."""
    video = torch.rand(1, 3, 9, 32, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    latents = []
    for flag in ("false", "true"):
        pipe = VideoConditionalPipeline.from_config(tiny_config("num_output_frames=6", f"fp8_linears={flag}"))
        converted = sum(isinstance(m, Float8Linear) for m in pipe.generator.modules())
        assert converted == (len(TARGETS) * len(pipe.generator.blocks) if flag == "true" else 0)
        latents.append(pipe("a red square", "a blue circle", video, seed=0, decode=False).latents)
    cosine = torch.nn.functional.cosine_similarity(latents[0].flatten(), latents[1].flatten(), dim=0)
    assert cosine >= 0.99


def test_fp8_linears_refuse_an_unmerged_lora_layer():
    """A target that is not a plain linear (an adapter left unmerged) is an error, not silently dropped."""
    pipe = VideoConditionalPipeline.from_config(tiny_config("num_output_frames=6"))
    block = pipe.generator.blocks[1]
    block.self_attn.q = torch.nn.Sequential(block.self_attn.q)
    with pytest.raises(ConfigError, match=r"blocks\.1\.self_attn\.q .*merge_lora=true"):
        convert_block_linears(pipe.generator.blocks)


def _ffn_inputs(model, device: str, dtype: torch.dtype) -> tuple[torch.nn.Module, torch.Tensor]:
    ffn = model.blocks[0].ffn.to(device, dtype)
    x = torch.randn(1, 3, 7, model.arch.dim, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    return ffn, x


def test_fuse_ffn_gelu_keeps_the_state_dict_and_the_cpu_output(tiny_model):
    """fuse_ffn_gelu: every block's FFN is swapped, its parameters keep their names, and on the CPU (where
    the epilogue is not used) the output is the reference's, bit for bit."""
    ffn, x = _ffn_inputs(tiny_model, "cpu", torch.float32)
    keys, reference = set(tiny_model.state_dict()), ffn(x)
    assert fuse_ffn_gelu(tiny_model.blocks) == len(tiny_model.blocks)
    assert all(isinstance(block.ffn, GeluEpilogueFFN) for block in tiny_model.blocks)
    assert set(tiny_model.state_dict()) == keys
    assert torch.equal(tiny_model.blocks[0].ffn(x), reference)


def test_fuse_ffn_gelu_leaves_other_activations_alone(tiny_model):
    """Only the tanh GELU is what the epilogue computes: an FFN with the exact GELU stays as it is."""
    tiny_model.blocks[0].ffn[1] = torch.nn.GELU()
    assert fuse_ffn_gelu(tiny_model.blocks) == len(tiny_model.blocks) - 1
    assert type(tiny_model.blocks[0].ffn) is torch.nn.Sequential


def test_fuse_ffn_gelu_switch_in_the_pipeline(caplog):
    """The config switch reaches the generator; with fp8_linears the FFNs start with a float8 layer, which
    has no GELU epilogue, so they stay as they are and the log says so."""
    pipe = VideoConditionalPipeline.from_config(tiny_config("num_output_frames=6", "fuse_ffn_gelu=true"))
    assert all(isinstance(block.ffn, GeluEpilogueFFN) for block in pipe.generator.blocks)
    pipe = VideoConditionalPipeline.from_config(
        tiny_config("num_output_frames=6", "fuse_ffn_gelu=true", "fp8_linears=true")
    )
    assert all(type(block.ffn) is torch.nn.Sequential for block in pipe.generator.blocks)
    assert all(isinstance(block.ffn[0], Float8Linear) for block in pipe.generator.blocks)
    assert "fuse_ffn_gelu: 0 of" in caplog.text


def test_fused_ffn_computes_as_written_once_its_layers_change(tiny_model):
    """A fused FFN whose first layer was replaced since (a float8 layer) is no longer fusable, which is
    what its forward checks before using the epilogue, and computes through its layers."""
    ffn, x = _ffn_inputs(tiny_model, "cpu", torch.float32)
    fuse_ffn_gelu(tiny_model.blocks)
    assert fusable(ffn)
    ffn[0] = Float8Linear(ffn[0])
    assert not fusable(ffn)
    assert torch.equal(ffn(x), ffn[2](ffn[1](ffn[0](x))))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="the GELU epilogue runs on CUDA only")
@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
def test_fuse_ffn_gelu_matches_the_reference_on_cuda(tiny_model, dtype, tolerance):
    """On CUDA the epilogue's GELU is the tanh form: float32 output within 1e-5 of the reference (relative
    L2); in bf16 within 1e-2, as the reference rounds the product to bf16 before its GELU and the epilogue
    does not."""
    ffn, x = _ffn_inputs(tiny_model, "cuda", dtype)
    reference = ffn(x).float()
    fuse_ffn_gelu(tiny_model.blocks)
    fused = tiny_model.blocks[0].ffn(x).float()
    assert ((fused - reference).norm() / reference.norm()).item() <= tolerance


def test_cuda_graphs_belong_to_their_cache_object(tiny_model):
    """A graph replays into the cache buffers it was captured on: a new cache object never gets an old
    cache's graph, and the old cache stays alive (its memory cannot be reused) while its graphs exist."""
    table = GraphTable()
    key = ((1, 3, 16, 4, 6), 6 * 24)  # block shape, visible cache tokens
    first = cache_for(tiny_model, cache_frames=6, sink_frames=1)
    first_alive = weakref.ref(first)
    assert table.get(first, key) is None
    table.put(first, key, "graph on the first cache")
    assert table.get(first, key) == "graph on the first cache"

    del first
    gc.collect()
    assert first_alive() is not None  # held by the table: no new cache can take its memory or its id

    second = cache_for(tiny_model, cache_frames=6, sink_frames=1)
    assert table.get(second, key) is None  # same key, another object: captured anew
    gc.collect()
    assert first_alive() is None and len(table) == 0  # the old graphs and the old cache are let go
    with pytest.raises(RuntimeError, match="GraphTable.put"):
        table.put(cache_for(tiny_model, cache_frames=6, sink_frames=1), key, "graph")


def test_compile_cache_dir_is_populated(tmp_path, monkeypatch):
    """compile_cache_dir: a compile through the CLI's setup writes its graphs there (a second process
    would load them instead of compiling), and the environment points Inductor and Triton at it."""
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    from longlive.compile_cache import PGO_JOB_ID, enable_compile_cache

    for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)  # restored after the test
    monkeypatch.setattr(inductor_config, "fx_graph_cache", False)
    monkeypatch.setattr(functorch_config, "enable_autograd_cache", False)
    monkeypatch.setattr(torch.compiler.config, "job_id", None)  # process-wide: restored for the other tests
    cfg = tiny_config(f"compile_cache_dir={tmp_path / 'cache'}")
    folder = enable_compile_cache(cfg.compile_cache_dir)
    assert folder == tmp_path / "cache" and os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(folder)
    assert inductor_config.fx_graph_cache and functorch_config.enable_autograd_cache
    assert torch.compiler.config.job_id == PGO_JOB_ID

    torch._dynamo.reset()
    compiled = torch.compile(lambda x: torch.sin(x) * 3 + x.square())
    x = torch.randn(5, 7)
    torch.testing.assert_close(compiled(x), torch.sin(x) * 3 + x.square())
    assert any((folder / "fxgraph").rglob("*")), sorted(p.name for p in folder.rglob("*"))
    assert enable_compile_cache(None) is None


def test_graph_inputs_are_copied_on_a_blocks_first_replay_only(tiny_model):
    """The runner copies a block's rope tables (window-relative: the queries' and the visible keys') and
    cache slots into a graph's buffers when the replay follows a new block, not on the block's later passes;
    latents and timesteps every pass. (The replay itself needs CUDA: tests above, on a GPU.)"""
    shape = (1, 3, 16, *LATENT_HW)
    cache = cache_for(tiny_model, cache_frames=6, sink_frames=1)
    cache.window_rope = True  # keys unrotated, window-relative positions per pass

    def begin(start: int):
        cache.begin_block(start, shape[1])
        return tiny_model.rotary_table(torch.Size(shape), start, torch.device("cpu"), cache.frame_positions)

    for start in (0, 3):
        begin(start)
    rope = begin(6)  # the window is full: blocks at 6 and 9 see 6 frames, at other key positions
    entry = _Graph(None, torch.zeros(shape), torch.zeros(1, 3), rope.clone(), cache.token_index.clone(), None)
    entry.block_inputs = (rope, cache.token_index)
    buffers = [entry.rope.queries.cos, entry.rope.keys[0].sin, entry.token_index]
    for buffer in buffers:
        buffer.zero_()  # marks: a copy would overwrite them
    latents = torch.randn(shape)
    CUDAGraphGenerator._copy_inputs(entry, latents, torch.ones(1, 3), rope, cache)  # a later pass of block 6
    assert torch.equal(entry.latents, latents) and torch.equal(entry.timesteps, torch.ones(1, 3))
    assert all(not buffer.any() for buffer in buffers)

    rope = begin(9)
    CUDAGraphGenerator._copy_inputs(entry, latents, torch.ones(1, 3), rope, cache)  # block 9's first pass
    assert torch.equal(entry.rope.queries.cos, rope.queries.cos)
    assert torch.equal(entry.rope.keys[0].sin, rope.keys[0].sin)
    assert torch.equal(entry.token_index, cache.token_index) and entry.block_inputs[0] is rope
