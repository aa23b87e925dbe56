"""LongLive v1.0's own prompt-switch recache against ours, with the same weights, caches and inputs.

The check behind issue 15 ("exactly LongLive"): LongLive's `CausalWanModel` (its Infinity-RoPE
`causal_model_infinity` one with `--infinite`, as its `WanDiffusionWrapper` picks it for
`model_kwargs.use_infinite_attention`) gets our generator's random weights; both sides write the same
clean latents into their caches block by block (LongLive's context pass, our `_write_context`), switch
prompt at frame c (LongLive's `_recache_after_switch`, our `_switch`), and run the next block's first
denoising step. Per case it prints, for the K/V both keep of the same frames and for the two next-block
predictions, max |diff|, the relative error ||ours - theirs|| / ||theirs|| and the cosine. The first case
has no switch: the same rollout and a plain next block, the noise floor of the dtype (bf16 on a GPU).
Prompt embeddings are random ([1, text_len, text_dim], no text encoder) on both sides. Needs a LongLive
checkout (`git -C <mirror> archive v1.0 | tar -x -C DIR`); its CUDA-only attention becomes SDPA in the
inputs' dtype, and packages its sources import but that are not installed (flash_attn, ...) are stubbed.

    python scripts/experiments/longlive_recache_replay.py --longlive DIR [--mode longlive|window] [--infinite]
    python scripts/experiments/longlive_recache_replay.py --longlive .ll --size published --device cuda \
        --dtype bfloat16 [--infinite]     # published geometry (window 12, sink 3), random weights

Run 2026-11-30, tiny, CPU, float32 (window 6, sink 2, blocks of 3), context_noise 0 (100: the same to
within 1e-7); `--mode window` differs, as before. Cosine 1.0000000 everywhere:

    case                                   ours reran   K/V max   K/V rel   next max  next rel
    no switch (rollout of 9)               -            7.2e-07   1.1e-07   7.2e-07   1.6e-07
    switch at 9                            (5, 9)       7.2e-07   1.0e-07   6.0e-07   1.4e-07
    switch at 6                            (0, 6)       6.0e-07   9.3e-08   7.2e-07   1.5e-07
    switch at 3                            (0, 3)       4.8e-07   9.1e-08   7.2e-07   1.5e-07
    local_attn_size=-1, switch at 6        (0, 6)       6.0e-07   9.3e-08   8.3e-07   1.4e-07
    global_sink=false, switch at 9         (3, 9)       7.2e-07   1.0e-07   7.2e-07   1.4e-07

`--infinite` (a rollout of 9 frames is past the window of 6, so window positions differ from absolute):

    no switch (rollout of 9)               -            7.2e-07   1.0e-07   6.0e-07   1.5e-07
    switch at 9                            (5, 9)       6.0e-07   1.0e-07   9.5e-07   1.7e-07
    switch at 6                            (0, 6)       6.0e-07   8.9e-08   7.2e-07   1.5e-07
    switch at 3                            (0, 3)       4.8e-07   8.7e-08   7.2e-07   1.5e-07
    local_attn_size=-1, switch at 6        (0, 6)       6.0e-07   8.9e-08   8.3e-07   1.4e-07
    global_sink=false, switch at 9         (3, 9)       7.2e-07   9.5e-08   9.5e-07   1.5e-07

Published size in bfloat16 on the CPU at 32x48 pixels (`--size published --dtype bfloat16 height=32 width=48`,
a smoke run of that path): no switch after 15 frames, K/V rel 1.1e-02 cos 0.99994, next block rel 1.3e-02 cos
0.99992; a switch at 15 the same (also with `--infinite`): the switches add nothing over bf16's own noise.

Ours with window RoPE against LongLive's absolute-RoPE model differs by 4.0 in K (rel 0.42) and 4.4e-02 in
the next block, so the replay tells the two apart.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.abc
import importlib.machinery
import io
import logging
import re
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from longlive.benchmark import RandomPrompts
from longlive.config import load_config
from longlive.pipeline import VideoConditionalPipeline, plan_blocks
from longlive.presets import model_preset

REPO = Path(__file__).resolve().parents[2]
# Per size: config, overrides, and the cases (overrides, switch frame; None: no switch, the noise baseline).
SIZES = {
    "tiny": ("tiny_interactive.yaml", ["model_kwargs.sink_size=2", "num_output_frames=12"]),
    "published": (
        "longlive_interactive_inference.yaml",
        ["wan_model_dir=null", "generator_ckpt=null", "lora_ckpt=null"]
        + ["num_output_frames=18", "switch_frame_indices=9"],  # room for the block after a switch at 15
    ),
}
GLOBAL, NO_GLOBAL_SINK = ("model_kwargs.local_attn_size=-1",), ("global_sink=false",)
CASES = {
    "tiny": (((), None, 9), ((), 9), ((), 6), ((), 3), (GLOBAL, 6), (NO_GLOBAL_SINK, 9)),
    "published": (((), None, 15), ((), 15), ((), 9), ((), 6), (GLOBAL, 9), (NO_GLOBAL_SINK, 15)),
}


def sdpa(q, k, v, **_):
    """[B, N, H, D] attention in the inputs' dtype (LongLive's fallback casts to bf16)."""
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


class _Stubs(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Last on the import path while LongLive loads: a package its sources import (flash_attn, lmdb, peft,
    ...) that is not installed becomes an empty module, named in `made`. Only those names: torch's own
    optional imports (triton, ...) must still fail as usual."""

    def __init__(self, root: Path) -> None:
        self.made: list[str] = []
        self.names = {
            match.group(1)
            for source in root.rglob("*.py")
            for match in re.finditer(r"^\s*(?:from|import)\s+(\w+)", source.read_text(errors="replace"), re.M)
        } - {"torch", "wan", "utils", "pipeline"}

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] not in self.names:
            return None
        return importlib.machinery.ModuleSpec(name, self, is_package=True)

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []
        module.__getattr__ = lambda attr: type(attr, (), {"__init__": _unavailable(spec.name)})
        self.made.append(spec.name)
        return module

    def exec_module(self, module) -> None:
        pass


def _unavailable(package: str):
    def fail(*_, **__):
        raise RuntimeError(f"{package} is a stub in this replay (not installed)")

    return fail


def import_longlive(root: Path, infinite: bool) -> types.SimpleNamespace:
    """LongLive's model (the Infinity-RoPE one with `infinite`), wrapper and interactive pipeline, with SDPA
    in the inputs' dtype for its attention and stubs for the packages it imports but never uses here."""
    if not (root / "wan" / "modules" / "causal_model.py").is_file():
        sys.exit(f"--longlive {root}: not a LongLive v1.0 checkout (no wan/modules/causal_model.py)")
    if not torch.cuda.is_available():
        torch.cuda.current_device = lambda: 0  # its modules build cuda:N devices at import
    easydict = types.ModuleType("easydict")
    easydict.EasyDict = type("EasyDict", (dict,), {"__getattr__": dict.get})
    ftfy = types.ModuleType("ftfy")
    ftfy.fix_text = lambda text: text
    packages = {}
    for name in ("wan", "utils", "pipeline"):  # skip their __init__s (torchvision, training pipelines); ours is utils
        packages[name] = types.ModuleType(name)
        packages[name].__path__ = [str(root / name)]
    sys.modules.update(easydict=easydict, ftfy=ftfy, **packages)
    sys.path.insert(0, str(root))
    stubs = _Stubs(root)
    sys.meta_path.append(stubs)
    try:
        import wan.modules.causal_model as causal_model
        import wan.modules.causal_model_infinity as causal_model_infinity
        import wan.modules.model as wan_model
        from pipeline.interactive_causal_inference import InteractiveCausalInferencePipeline
        from utils.scheduler import FlowMatchScheduler
        from utils.wan_wrapper import WanDiffusionWrapper
    finally:
        sys.meta_path.remove(stubs)
    if stubs.made:
        print(f"stubbed (not installed): {', '.join(sorted(set(stubs.made)))}", flush=True)
    causal_model.attention = causal_model_infinity.attention = sdpa
    wan_model.flash_attention = lambda q, k, v, k_lens=None, **_: sdpa(q, k, v)
    return types.SimpleNamespace(
        model=(causal_model_infinity if infinite else causal_model).CausalWanModel,
        wrapper=WanDiffusionWrapper,
        pipeline=InteractiveCausalInferencePipeline,
        scheduler=FlowMatchScheduler,
    )


def longlive_side(ll, ours: VideoConditionalPipeline, cfg, context_noise: float):
    """LongLive's pipeline around a model holding our weights, caches on our device and dtype."""
    arch, g = ours.generator.arch, ours.geometry
    device, dtype = ours.device, ours.generator.dtype
    local, sink = cfg.model_kwargs.local_attn_size, cfg.model_kwargs.sink_size
    with torch.device(device):  # its random init on the GPU at the published size (seconds, not a minute)
        model = ll.model(
            text_len=arch.text_len, dim=arch.dim, ffn_dim=arch.ffn_dim, freq_dim=arch.freq_dim,
            text_dim=arch.text_dim, num_heads=arch.num_heads, num_layers=arch.num_layers, local_attn_size=local,
            sink_size=sink,
        ).eval()  # fmt: skip
    model.load_state_dict(ours.generator.state_dict(), strict=True)
    model.to(device=device, dtype=dtype)
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
    zeros = dict(device=device, dtype=dtype)
    index = dict(device=device, dtype=torch.long)
    pipe.kv_cache1 = [
        {"k": torch.zeros(kv, **zeros), "v": torch.zeros(kv, **zeros), "global_end_index": torch.zeros(1, **index),
         "local_end_index": torch.zeros(1, **index)}
        for _ in range(arch.num_layers)
    ]  # fmt: skip
    pipe.crossattn_cache = [
        {"k": torch.zeros(text, **zeros), "v": torch.zeros(text, **zeros), "is_init": False}
        for _ in range(arch.num_layers)
    ]
    return pipe


@dataclass
class Diff:
    """max |a - b|, ||a - b|| / ||b|| and cosine over everything added, in float64; the worst frames too."""

    sq_diff: float = 0.0
    sq_a: float = 0.0
    sq_b: float = 0.0
    dot: float = 0.0
    max: float = 0.0
    per_frame: dict[int, float] = field(default_factory=dict)

    def add(self, a: torch.Tensor, b: torch.Tensor, frame: int = -1) -> None:
        a, b = a.double(), b.double()
        worst = (a - b).abs().max().item()
        self.sq_diff += (a - b).square().sum().item()
        self.sq_a += a.square().sum().item()
        self.sq_b += b.square().sum().item()
        self.dot += (a * b).sum().item()
        self.max = max(self.max, worst)
        self.per_frame[frame] = max(self.per_frame.get(frame, 0.0), worst)

    def __str__(self) -> str:
        cos = self.dot / max((self.sq_a * self.sq_b) ** 0.5, 1e-300)
        return f"max {self.max:.1e} rel {(self.sq_diff / max(self.sq_b, 1e-300)) ** 0.5:.1e} cos {cos:.7f}"

    def frames_over(self, tolerance: float) -> str:
        bad = {f: d for f, d in sorted(self.per_frame.items()) if d > tolerance}
        return f" frames over {tolerance:g}: " + ", ".join(f"{f}: {d:.1e}" for f, d in bad.items()) if bad else ""


def build(size: str, overrides: list[str], device: str, dtype: str) -> tuple[VideoConditionalPipeline, object]:
    """Our pipeline at `size` with random weights and random prompt embeddings (no text encoder)."""
    name, base = SIZES[size]
    cfg = load_config(REPO / "configs" / name, base + [f"device={device}", f"dtype={dtype}"] + overrides)
    arch = model_preset(cfg).generator
    torch.manual_seed(0)
    prompts = RandomPrompts(arch.text_len, arch.text_dim, torch.device(device), getattr(torch, dtype))
    return VideoConditionalPipeline.from_config(cfg, device=device, prompts=prompts), cfg


def compare_cache(ours: VideoConditionalPipeline, theirs, cfg, upto: int, recached: bool) -> Diff:
    """K/V of the frames both caches hold after `upto` frames. LongLive's slot i holds frame first + i, except
    the sinks it keeps (rolled past the window, or a late switch with global_sink)."""
    g, diff = ours.geometry, Diff()
    first = upto - min(g.cache_frames, upto)
    kept_sinks = first > 0 and (cfg.global_sink or not recached)
    for i in range(min(g.cache_frames, upto)):
        frame = i if kept_sinks and i < g.sink_frames else first + i
        slot = ours.kv_cache.slot_frames.index(frame)
        tokens = slice(i * g.frame_tokens, (i + 1) * g.frame_tokens)
        for layer in range(g.num_layers):
            for name, buffer in (("k", ours.kv_cache.keys), ("v", ours.kv_cache.values)):
                mine = buffer[layer, 0, slot * g.frame_tokens : (slot + 1) * g.frame_tokens]
                diff.add(mine, theirs.kv_cache1[layer][name][0, tokens], frame)
    return diff


def replay(ll, args, overrides: tuple[str, ...], switch: int | None, upto: int, context_noise: float) -> str:
    """Context pass of `upto` frames under prompt a on both sides, a switch to b at `upto` (unless `switch` is
    None), then the next block's first denoising step; their K/V and predictions compared."""
    extra = [f"context_noise={context_noise}", f"recache_mode={args.mode}"] + list(overrides) + args.overrides
    if args.infinite:
        extra.append("model_kwargs.use_infinite_attention=true")
    ours, cfg = build(args.size, extra, args.device, args.dtype)
    theirs = longlive_side(ll, ours, cfg, context_noise)
    g, device, dtype = ours.geometry, ours.device, ours.generator.dtype
    prompts = {p: ours.prompts.encode(p) for p in ("a", "b")}
    rng = torch.Generator().manual_seed(0)
    shape = (g.latent_channels, g.latent_height, g.latent_width)
    clean = torch.randn(1, upto, *shape, generator=rng).to(device, dtype)
    noisy = torch.randn(1, g.frames_per_block, *shape, generator=rng).to(device, dtype)
    blocks = plan_blocks(0, cfg.num_output_frames, g.frames_per_block)
    texts = {p: ours.generator.prepare_text(e) for p, e in prompts.items()}
    ours._reset_caches(batch_size=1)
    for block in blocks[: upto // g.frames_per_block]:
        t = torch.full((1, block.size), context_noise, device=device)
        theirs.generator(
            clean[:, block.start : block.end], {"prompt_embeds": prompts["a"]}, t, kv_cache=theirs.kv_cache1,
            crossattn_cache=theirs.crossattn_cache, current_start=block.start * g.frame_tokens,
        )  # fmt: skip
        ours._write_context(clean[:, block.start : block.end], block, texts["a"])
    prompt, what = "a", "no switch"
    if switch is not None:
        prompt = "b"
        with contextlib.redirect_stdout(io.StringIO()):  # its progress prints
            theirs._recache_after_switch(clean, upto, {"prompt_embeds": prompts["b"]})
        nxt = blocks[upto // g.frames_per_block]
        what = f"switch at {upto}, ours reran {ours._switch(nxt, 'b', texts['b'], clean, blocks, True).recached}"
    cache = compare_cache(ours, theirs, cfg, upto, recached=switch is not None)
    t = torch.full((1, g.frames_per_block), 1000.0, device=device)
    their_flow = theirs.generator.model(
        noisy.permute(0, 2, 1, 3, 4), t=t, context=prompts[prompt], seq_len=g.cache_tokens, kv_cache=theirs.kv_cache1,
        crossattn_cache=theirs.crossattn_cache, current_start=upto * g.frame_tokens,
    ).permute(0, 2, 1, 3, 4)  # fmt: skip
    flow = Diff()
    flow.add(ours.generator(noisy, t, texts[prompt], ours.kv_cache, start_frame=upto), their_flow)
    tolerance = 1e-4 if dtype == torch.float32 else float("inf")
    return (
        f"{' '.join(overrides) or 'local window'} {what}, context_noise {context_noise:g}: "
        f"K/V {cache}{cache.frames_over(tolerance)}; next block {flow}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--longlive", type=Path, required=True, help="a checkout of NVlabs/LongLive v1.0")
    parser.add_argument("--mode", choices=("longlive", "window"), default="longlive")
    parser.add_argument("--size", choices=tuple(SIZES), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--infinite", action="store_true", help="window-relative RoPE (Infinity) on both sides")
    parser.add_argument("overrides", nargs="*", help="config overrides for both sides, e.g. height=64 width=64")
    args = parser.parse_args()
    ll = import_longlive(args.longlive.resolve(), args.infinite)
    torch.set_grad_enabled(False)
    logging.disable(logging.WARNING)  # the random-weights notices, once per case
    for case in CASES[args.size]:
        overrides, switch, upto = (case[0], case[1], case[2]) if len(case) == 3 else (case[0], True, case[1])
        if args.mode == "window" and overrides == NO_GLOBAL_SINK:
            continue  # refused in window mode
        for context_noise in (0.0, 100.0):
            print(replay(ll, args, overrides, switch, upto, context_noise), flush=True)


if __name__ == "__main__":
    main()
