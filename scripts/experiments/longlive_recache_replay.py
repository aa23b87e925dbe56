"""LongLive v1.0's own prompt-switch recache against ours, on the tiny model in float32 on the CPU.

The check behind issue 15 ("exactly LongLive"): LongLive's `CausalWanModel` gets our tiny generator's
weights; both sides write the same clean latents into their caches block by block (LongLive's context
pass, our `_write_context`), switch prompt at frame c (LongLive's `_recache_after_switch`, our
`_switch`), and then run the next block's first denoising step. It prints, per case, the largest
difference between the K/V each keeps for the same frame and between the two next-block predictions.
Needs a LongLive checkout (`git -C <mirror> archive v1.0 | tar -x -C DIR`); its CUDA-only attention and
a few of its imports are replaced by shims here (float32 SDPA, so nothing is rounded to bf16):

    python scripts/experiments/longlive_recache_replay.py --longlive DIR [--mode longlive|window]

Run 2026-11-30: every longlive case within 1e-6 (K/V and next block); `--mode window` differs by up to 0.56.
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F

from longlive.config import load_config
from longlive.pipeline import VideoConditionalPipeline, plan_blocks

REPO = Path(__file__).resolve().parents[2]
CASES = (((), 9), ((), 6), ((), 3), (("model_kwargs.local_attn_size=-1",), 6), (("global_sink=false",), 9))


def sdpa(q, k, v, **_):
    """[B, N, H, D] attention in the inputs' dtype (LongLive's fallback casts to bf16)."""
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


def import_longlive(root: Path) -> types.SimpleNamespace:
    """LongLive's model, wrapper and interactive pipeline, without CUDA and the packages they never use here."""
    torch.cuda.current_device = lambda: 0  # its modules build cuda:N devices at import
    easydict = types.ModuleType("easydict")
    easydict.EasyDict = type("EasyDict", (dict,), {"__getattr__": dict.get})
    ftfy = types.ModuleType("ftfy")
    ftfy.fix_text = lambda text: text
    packages = {}
    for name in ("wan", "utils"):  # wan/__init__.py imports torchvision; utils/ is a namespace (ours would win)
        packages[name] = types.ModuleType(name)
        packages[name].__path__ = [str(root / name)]
    sys.modules.update(easydict=easydict, ftfy=ftfy, **packages)
    sys.path.insert(0, str(root))
    import wan.modules.causal_model as causal_model
    import wan.modules.model as wan_model
    from pipeline.interactive_causal_inference import InteractiveCausalInferencePipeline
    from utils.scheduler import FlowMatchScheduler
    from utils.wan_wrapper import WanDiffusionWrapper

    causal_model.attention = sdpa
    wan_model.flash_attention = lambda q, k, v, k_lens=None, **_: sdpa(q, k, v)
    return types.SimpleNamespace(
        model=causal_model.CausalWanModel,
        wrapper=WanDiffusionWrapper,
        pipeline=InteractiveCausalInferencePipeline,
        scheduler=FlowMatchScheduler,
    )


def longlive_side(ll, ours: VideoConditionalPipeline, cfg, context_noise: float):
    """LongLive's pipeline around a model holding our weights, with caches sized for the tiny geometry."""
    arch, g = ours.generator.arch, ours.geometry
    local, sink = cfg.model_kwargs.local_attn_size, cfg.model_kwargs.sink_size
    model = ll.model(
        text_len=arch.text_len, dim=arch.dim, ffn_dim=arch.ffn_dim, freq_dim=arch.freq_dim, text_dim=arch.text_dim,
        num_heads=arch.num_heads, num_layers=arch.num_layers, local_attn_size=local, sink_size=sink,
    ).eval()  # fmt: skip
    model.load_state_dict(ours.generator.state_dict(), strict=True)
    model.local_attn_size = local
    for module in model.modules():  # its window is local_attn_size * 1560 tokens; ours has g.frame_tokens a frame
        if hasattr(module, "max_attention_size"):
            module.max_attention_size = g.cache_frames * g.frame_tokens
    wrapper = ll.wrapper.__new__(ll.wrapper)
    torch.nn.Module.__init__(wrapper)
    wrapper.model, wrapper.uniform_timestep, wrapper.seq_len = model, False, g.cache_tokens
    wrapper.scheduler = ll.scheduler(shift=5.0, sigma_min=0.0, extra_one_step=True)
    pipe = ll.pipeline.__new__(ll.pipeline)
    torch.nn.Module.__init__(pipe)
    pipe.generator, pipe.num_transformer_blocks, pipe.frame_seq_length = wrapper, arch.num_layers, g.frame_tokens
    pipe.local_attn_size, pipe.num_frame_per_block, pipe.global_sink = local, g.frames_per_block, cfg.global_sink
    pipe.args = types.SimpleNamespace(context_noise=context_noise)
    kv = (1, g.cache_tokens, arch.num_heads, arch.head_dim)
    text = (1, arch.text_len, arch.num_heads, arch.head_dim)
    pipe.kv_cache1 = [
        {"k": torch.zeros(kv), "v": torch.zeros(kv), "global_end_index": torch.zeros(1, dtype=torch.long),
         "local_end_index": torch.zeros(1, dtype=torch.long)}
        for _ in range(arch.num_layers)
    ]  # fmt: skip
    pipe.crossattn_cache = [
        {"k": torch.zeros(text), "v": torch.zeros(text), "is_init": False} for _ in range(arch.num_layers)
    ]
    return pipe


def replay(ll, overrides: tuple[str, ...], switch: int, context_noise: float, mode: str) -> str:
    cfg = load_config(
        REPO / "configs" / "tiny_interactive.yaml",
        ["model_kwargs.sink_size=2", "num_output_frames=12", f"context_noise={context_noise}", f"recache_mode={mode}"]
        + list(overrides),
    )
    ours = VideoConditionalPipeline.from_config(cfg)
    theirs = longlive_side(ll, ours, cfg, context_noise)
    g, layers = ours.geometry, ours.generator.arch.num_layers
    prompts = {p: ours.prompts.encode(p) for p in ("a", "b")}
    rng = torch.Generator().manual_seed(0)
    clean = torch.randn(1, switch, g.latent_channels, g.latent_height, g.latent_width, generator=rng)
    noisy = torch.randn(1, g.frames_per_block, g.latent_channels, g.latent_height, g.latent_width, generator=rng)
    blocks = plan_blocks(0, cfg.num_output_frames, g.frames_per_block)
    texts = {p: ours.generator.prepare_text(e) for p, e in prompts.items()}
    ours._reset_caches(batch_size=1)
    for block in blocks[: switch // g.frames_per_block]:
        t = torch.full((1, block.size), context_noise)
        theirs.generator(
            clean[:, block.start : block.end], {"prompt_embeds": prompts["a"]}, t, kv_cache=theirs.kv_cache1,
            crossattn_cache=theirs.crossattn_cache, current_start=block.start * g.frame_tokens,
        )  # fmt: skip
        ours._write_context(clean[:, block.start : block.end], block, texts["a"])
    theirs._recache_after_switch(clean, switch, {"prompt_embeds": prompts["b"]})
    recached = ours._switch(blocks[switch // g.frames_per_block], "b", texts["b"], clean, blocks, True).recached

    # LongLive's slot i holds frame a + i, except the sinks it protected (a late switch with global_sink).
    first = switch - min(g.cache_frames, switch)
    kept_sinks = cfg.global_sink and first > 0
    worst = 0.0
    for i in range(min(g.cache_frames, switch)):
        frame = i if kept_sinks and i < g.sink_frames else first + i
        slot = ours.kv_cache.slot_frames.index(frame)
        for layer in range(layers):
            for name, buffer in (("k", ours.kv_cache.keys), ("v", ours.kv_cache.values)):
                mine = buffer[layer, 0, slot * g.frame_tokens : (slot + 1) * g.frame_tokens]
                other = theirs.kv_cache1[layer][name][0, i * g.frame_tokens : (i + 1) * g.frame_tokens]
                worst = max(worst, (mine - other).abs().max().item())
    t = torch.full((1, g.frames_per_block), 1000.0)
    their_flow = theirs.generator.model(
        noisy.permute(0, 2, 1, 3, 4), t=t, context=prompts["b"], seq_len=g.cache_tokens, kv_cache=theirs.kv_cache1,
        crossattn_cache=theirs.crossattn_cache, current_start=switch * g.frame_tokens,
    ).permute(0, 2, 1, 3, 4)  # fmt: skip
    our_flow = ours.generator(noisy, t, texts["b"], ours.kv_cache, start_frame=switch)
    return (
        f"{' '.join(overrides) or 'local window'} switch at {switch}, context_noise {context_noise:g}: "
        f"ours reran {recached}, K/V max |diff| {worst:.1e}, next block max |diff| "
        f"{(their_flow - our_flow).abs().max().item():.1e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--longlive", type=Path, required=True, help="a checkout of NVlabs/LongLive v1.0")
    parser.add_argument("--mode", choices=("longlive", "window"), default="longlive")
    args = parser.parse_args()
    ll = import_longlive(args.longlive.resolve())
    torch.set_grad_enabled(False)
    for overrides, switch in CASES:
        if args.mode == "window" and "global_sink=false" in overrides:
            continue  # refused in window mode
        for context_noise in (0.0, 100.0):
            print(replay(ll, overrides, switch, context_noise, args.mode), flush=True)


if __name__ == "__main__":
    main()
