"""Loaders: published layouts on the meta device, tiny checkpoints in every layout, clear errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from conftest import REPO, tiny_config
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers, convert_wan_vae_to_diffusers
from peft import get_peft_model, get_peft_model_state_dict
from safetensors.torch import save_file
from transformers import UMT5EncoderModel

from longlive.check_weights import check_file
from longlive.cli import main
from longlive.lora import apply_lora, lora_config, lora_target_modules
from longlive.model import CausalWanModel, init_random_weights
from longlive.pipeline import VideoConditionalPipeline
from longlive.presets import PRESETS
from longlive.text_encoder import byte_level_tokenizer, umt5_config
from longlive.vae import build_vae
from longlive.weights import WeightsError, load_generator, load_text_encoder, load_vae, wan_t5_to_transformers_name

LAYOUTS = REPO / "tests" / "layouts"
PUBLISHED = PRESETS["Wan2.1-T2V-1.3B"]
TINY = PRESETS["tiny"]
CPU = torch.device("cpu")


def manifest(name: str):
    return json.loads((LAYOUTS / name).read_text())


def shapes(tensors) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in tensors.items()}


def meta_tensors(layout: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    return {k: torch.empty(shape, device="meta") for k, shape in layout.items()}


# ----------------------------------------------------------------------------------------------
# Published sizes: the models the engine builds have exactly the published keys and shapes.
# ----------------------------------------------------------------------------------------------


def test_published_layouts():
    with torch.device("meta"):
        generator = CausalWanModel(PUBLISHED.generator)
        vae = build_vae(PUBLISHED.vae)
        text_encoder = UMT5EncoderModel(umt5_config(PUBLISHED.text_encoder))

    dit = manifest("wan2.1_t2v_1.3b_dit.json")
    assert shapes(generator.state_dict()) == dit
    assert manifest("longlive_generator.json") == {f"model.{k}": v for k, v in dit.items()}

    converted_vae = convert_wan_vae_to_diffusers(meta_tensors(manifest("wan2.1_vae.json")))
    assert shapes(converted_vae) == shapes(vae.state_dict())

    t5 = {wan_t5_to_transformers_name(k): v for k, v in manifest("wan2.1_umt5_xxl_encoder.json").items()}
    ours = shapes(text_encoder.state_dict())
    assert ours.pop("encoder.embed_tokens.weight") == t5["shared.weight"]  # tied to the shared embedding
    assert t5 == ours

    assert sorted(lora_target_modules(generator)) == sorted(manifest("longlive_lora_target_modules.json"))
    with torch.device("meta"):
        peft_model = get_peft_model(generator, lora_config(generator, rank=256, alpha=256, dropout=0.0))
    assert shapes(get_peft_model_state_dict(peft_model)) == manifest("longlive_lora_rank256.json")


# ----------------------------------------------------------------------------------------------
# Tiny checkpoints written in each published layout.
# ----------------------------------------------------------------------------------------------


def tiny_generator(seed: int) -> CausalWanModel:
    torch.manual_seed(seed)
    model = CausalWanModel(TINY.generator)
    init_random_weights(model)
    return model.eval()


def generator_output(model: CausalWanModel) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 2, 16, 4, 6, generator=g)
    text = torch.randn(1, TINY.generator.text_len, TINY.generator.text_dim, generator=g)
    with torch.no_grad():
        return model(latents, torch.tensor([[900.0, 300.0]]), model.prepare_text(text))


def write_original(model, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def write_sharded(model, folder: Path, shards: int = 2) -> Path:
    """Wan's original names in `diffusion_pytorch_model-0000i-of-0000n.safetensors` files plus their index."""
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    keys, weight_map = list(state), {}
    for i in range(shards):
        name = f"diffusion_pytorch_model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = keys[i::shards]
        save_file({k: state[k] for k in part}, str(folder / name))
        weight_map.update(dict.fromkeys(part, name))
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


def write_diffusers(model, folder: Path) -> Path:
    (folder / "transformer").mkdir(parents=True)
    converted = convert_wan_transformer_to_diffusers(dict(model.state_dict()))
    save_file(
        {k: v.contiguous() for k, v in converted.items()},
        str(folder / "transformer" / "diffusion_pytorch_model.safetensors"),
    )
    return folder


def write_longlive(base, ema, path: Path, fsdp: bool) -> Path:
    ema_prefix = "model._fsdp_wrapped_module." if fsdp else "model."
    torch.save(
        {
            "generator": {f"model.{k}": v for k, v in base.state_dict().items()},
            "generator_ema": {f"{ema_prefix}{k}": v for k, v in ema.state_dict().items()},
        },
        path,
    )
    return path


@pytest.mark.parametrize("layout", ["original", "diffusers"])
def test_generator_layouts_load_the_same_weights(tmp_path, layout):
    source = tiny_generator(0)
    path = (
        write_original(source, tmp_path / "dit.safetensors")
        if layout == "original"
        else write_diffusers(source, tmp_path)
    )
    loaded = load_generator(TINY.generator, path, CPU, torch.float32)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in source.state_dict().items())
    torch.testing.assert_close(generator_output(loaded), generator_output(source), atol=0, rtol=0)


@pytest.mark.parametrize("fsdp", [False, True])
def test_longlive_pt_picks_generator_or_ema(tmp_path, fsdp):
    base, ema = tiny_generator(0), tiny_generator(1)
    path = write_longlive(base, ema, tmp_path / "longlive_base.pt", fsdp)
    for use_ema, expected in ((False, base), (True, ema)):
        loaded = load_generator(TINY.generator, path, CPU, torch.float32, use_ema=use_ema)
        torch.testing.assert_close(generator_output(loaded), generator_output(expected), atol=0, rtol=0)


def test_generator_cast_to_configured_dtype(tmp_path):
    path = write_original(tiny_generator(0), tmp_path / "dit.safetensors")
    loaded = load_generator(TINY.generator, path, CPU, torch.bfloat16)
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    assert not any(p.is_meta for p in loaded.parameters())


def random_lora_file(tmp_path: Path, rank: int, wrapped: bool) -> tuple[Path, CausalWanModel]:
    """A LoRA over the tiny generator with non-zero B (a fresh LoRA is a no-op), saved as LongLive does."""
    reference = tiny_generator(0)
    peft_model = get_peft_model(reference, lora_config(reference, rank, rank, 0.0))
    torch.manual_seed(5)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.normal_(0, 0.1)
    state = get_peft_model_state_dict(peft_model)
    path = tmp_path / f"lora_{rank}_{wrapped}.pt"
    torch.save({"generator_lora": state} if wrapped else state, path)
    return path, peft_model.base_model.model


@pytest.mark.parametrize("wrapped", [True, False])
def test_lora_loads_and_merges(tmp_path, wrapped):
    path, reference = random_lora_file(tmp_path, rank=4, wrapped=wrapped)
    expected = generator_output(reference)
    assert not torch.allclose(expected, generator_output(tiny_generator(0)), atol=1e-3)  # the LoRA matters

    unmerged = apply_lora(tiny_generator(0), path, rank=4, alpha=4, merge=False)
    torch.testing.assert_close(generator_output(unmerged), expected, atol=1e-6, rtol=0)
    merged = apply_lora(tiny_generator(0), path, rank=4, alpha=4, merge=True)
    assert not any("lora" in k for k in merged.state_dict())
    torch.testing.assert_close(generator_output(merged), expected, atol=1e-5, rtol=0)


def _lora_by_hand(
    base: dict[str, torch.Tensor], lora: dict[str, torch.Tensor], scale: float
) -> dict[str, torch.Tensor]:
    """W + scale * B @ A for every adapted linear, from the files' tensors alone (no peft, no config code)."""
    merged = dict(base)
    for key, a in lora.items():
        if ".lora_A." in key:
            target = key.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")
            b = lora[key.replace(".lora_A.", ".lora_B.")]
            merged[target] = base[target] + scale * (b.double() @ a.double()).float()
    return merged


@pytest.mark.parametrize("merge", [True, False])
def test_lora_scale_alpha_not_rank(tmp_path, caplog, merge):
    """alpha != rank through the jobs' config path (`lora_ckpt`, `adapter`): each linear is W + (alpha/rank) B A."""
    from longlive.components import build_generator

    rank, alpha = 4, 10.0  # scale 2.5: neither 1 (alpha == rank) nor rank/alpha
    base = write_original(tiny_generator(0), tmp_path / "dit.safetensors")
    lora, _ = random_lora_file(tmp_path, rank=rank, wrapped=True)
    cfg = tiny_config(
        f"generator_ckpt={base}",
        f"lora_ckpt={lora}",
        f"adapter.rank={rank}",
        f"adapter.alpha={alpha}",
        "adapter.dtype=float32",
        f"merge_lora={str(merge).lower()}",
    )
    with caplog.at_level(logging.INFO, logger="longlive.components"):
        model = build_generator(cfg, CPU)
    assert "LoRA targets" not in caplog.text  # adapter.verbose is off
    base_state = {k: v.clone() for k, v in tiny_generator(0).state_dict().items()}
    expected = _lora_by_hand(base_state, torch.load(lora)["generator_lora"], alpha / rank)
    adapted = [k for k in expected if not torch.equal(expected[k], base_state[k])]
    assert len(adapted) == len(lora_target_modules(tiny_generator(0))) > 0
    if merge:
        state = model.state_dict()
        for key in expected:
            torch.testing.assert_close(state[key], expected[key], atol=1e-6, rtol=1e-6)
    reference = tiny_generator(0)
    reference.load_state_dict(expected)
    torch.testing.assert_close(generator_output(model), generator_output(reference), atol=1e-5, rtol=1e-5)


def tiny_vae(seed: int = 0):
    torch.manual_seed(seed)
    return build_vae(TINY.vae).eval()


def write_original_vae(vae, path: Path) -> Path:
    """The tiny VAE under Wan's original names (the published structure, so the manifest's keys)."""
    ours = vae.state_dict()
    original = {}
    for key in manifest("wan2.1_vae.json"):
        (converted,) = convert_wan_vae_to_diffusers({key: torch.empty(0)}).keys()
        original[key] = ours[converted]
    torch.save(original, path)
    return path


def test_vae_layouts_load_the_same_weights(tmp_path):
    source = tiny_vae()
    original = load_vae(TINY.vae, write_original_vae(source, tmp_path / "Wan2.1_VAE.pth"), CPU, torch.float32)
    source.save_pretrained(tmp_path / "vae")
    diffusers = load_vae(TINY.vae, tmp_path / "vae", CPU, torch.float32)
    video = torch.rand(1, 3, 5, 32, 48) * 2 - 1
    with torch.no_grad():
        expected = source.encode(video).latent_dist.mode()
        for loaded in (original, diffusers):
            torch.testing.assert_close(loaded.encode(video).latent_dist.mode(), expected, atol=0, rtol=0)


def tiny_text_encoder(seed: int = 0) -> UMT5EncoderModel:
    torch.manual_seed(seed)
    return UMT5EncoderModel(umt5_config(TINY.text_encoder)).eval()


def write_wan_t5(encoder: UMT5EncoderModel, path: Path, num_layers: int) -> Path:
    """The tiny encoder under Wan's own T5 names."""
    wan_names = [k for k in manifest("wan2.1_umt5_xxl_encoder.json") if not k.startswith("blocks.")]
    wan_names += [f"blocks.{i}.{rest}" for i in range(num_layers) for rest in _BLOCK_SUFFIXES]
    ours = encoder.state_dict()
    torch.save({k: ours[wan_t5_to_transformers_name(k)].to(torch.bfloat16) for k in wan_names}, path)
    return path


_BLOCK_SUFFIXES = sorted(
    k.split(".", 2)[2] for k in manifest("wan2.1_umt5_xxl_encoder.json") if k.startswith("blocks.0.")
)


def test_text_encoder_layouts_give_the_same_embeddings(tmp_path):
    source = tiny_text_encoder().to(torch.bfloat16).float()  # what a bf16 file can hold
    wan = load_text_encoder(TINY.text_encoder, write_wan_t5(source, tmp_path / "t5.pth", 2), CPU, torch.float32)
    source.save_pretrained(tmp_path / "text_encoder")
    hf = load_text_encoder(TINY.text_encoder, tmp_path / "text_encoder", CPU, torch.float32)
    ids = torch.tensor([[5, 9, 77, 1, 0, 0]])
    mask = (ids > 0).long() | (torch.arange(6) < 4).long()
    with torch.no_grad():
        expected = source(input_ids=ids, attention_mask=mask).last_hidden_state
        for loaded in (wan, hf):
            torch.testing.assert_close(loaded(input_ids=ids, attention_mask=mask).last_hidden_state, expected)
    assert wan.encoder.embed_tokens.weight is wan.shared.weight


@pytest.mark.parametrize("layout", ["original", "original-sharded", "diffusers"])
def test_pipeline_loads_a_wan_model_dir(tmp_path, layout):
    folder = tmp_path / layout
    folder.mkdir()
    source = tiny_generator(3)
    if layout in ("original", "original-sharded"):
        if layout == "original":
            write_original(source, folder / "diffusion_pytorch_model.safetensors")
        else:  # as the 14B folder holds its weights: shards and their index
            write_sharded(source, folder)
        write_original_vae(tiny_vae(), folder / "Wan2.1_VAE.pth")
        write_wan_t5(tiny_text_encoder(), folder / "models_t5_umt5-xxl-enc-bf16.pth", 2)
        byte_level_tokenizer().save_pretrained(folder / "google" / "umt5-xxl")
    else:
        write_diffusers(source, folder)
        tiny_vae().save_pretrained(folder / "vae")
        tiny_text_encoder().save_pretrained(folder / "text_encoder")
        byte_level_tokenizer().save_pretrained(folder / "tokenizer")
    pipe = VideoConditionalPipeline.from_config(
        tiny_config(f"wan_model_dir={folder}", "num_output_frames=3", "num_conditioning_frames=0")
    )
    torch.testing.assert_close(generator_output(pipe.generator), generator_output(source), atol=0, rtol=0)
    assert pipe("a red square", seed=0).frames.shape[2] == 4 * 3 - 3


# ----------------------------------------------------------------------------------------------
# Bad files: one clear error each.
# ----------------------------------------------------------------------------------------------


def test_wrong_kind_of_file_says_so(tmp_path):
    vae_path = write_original_vae(tiny_vae(), tmp_path / "Wan2.1_VAE.pth")
    with pytest.raises(WeightsError, match=r"Wan2.1_VAE.pth: expected a generator checkpoint but this is a vae"):
        load_generator(TINY.generator, vae_path, CPU, torch.float32)
    lora_path, _ = random_lora_file(tmp_path, rank=4, wrapped=True)
    with pytest.raises(WeightsError, match=r"a LoRA of rank 4, but adapter.rank is 8"):
        apply_lora(tiny_generator(0), lora_path, rank=8, alpha=8)
    with pytest.raises(WeightsError, match=r"expected a generator checkpoint but this is a lora"):
        load_generator(TINY.generator, lora_path, CPU, torch.float32)


def test_missing_unexpected_and_misshapen_keys_are_named(tmp_path):
    state = dict(tiny_generator(0).state_dict())
    del state["blocks.1.ffn.0.weight"]
    state["blocks.0.extra.weight"] = torch.zeros(2)
    state["head.head.bias"] = torch.zeros(7)
    path = tmp_path / "broken.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(WeightsError) as err:
        load_generator(TINY.generator, path, CPU, torch.float32)
    message = str(err.value)
    assert "broken.safetensors (Wan original layout)" in message
    assert "1 missing keys: blocks.1.ffn.0.weight" in message
    assert "1 unexpected keys: blocks.0.extra.weight" in message
    assert "head.head.bias [7] != [64]" in message
    # The published-size model refuses the tiny file too, naming the layout it looked like.
    with pytest.raises(WeightsError, match="shape mismatches"):
        load_generator(
            TINY.generator.__class__(
                dim=64, ffn_dim=64, num_heads=2, num_layers=2, freq_dim=32, text_dim=32, text_len=16
            ),
            write_original(tiny_generator(0), tmp_path / "ok.safetensors"),
            CPU,
            torch.float32,
        )


def test_not_a_checkpoint_and_missing_files(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=r"junk.pt: not a torch checkpoint"):
        load_generator(TINY.generator, junk, CPU, torch.float32)
    with pytest.raises(WeightsError, match="weights not found"):
        load_generator(TINY.generator, tmp_path / "nope.safetensors", CPU, torch.float32)


def test_cli_reports_bad_weights_in_one_line(tmp_path, capsys):
    missing_dir = tmp_path / "wan"
    missing_dir.mkdir()
    code = main(["t2v", "--config_path", str(REPO / "configs" / "tiny_t2v.yaml"), f"wan_model_dir={missing_dir}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("longlive: error: wan_model_dir") and "diffusion_pytorch_model" in err[0]


def _bad_weights_files(tmp_path: Path) -> dict[str, str]:
    """Broken files a user may hold, each -> the words its one-line verdict must contain."""
    good_st = write_original(tiny_generator(0), tmp_path / "good.safetensors").read_bytes()
    torch.save({"generator": {"x": torch.zeros(64, 64)}}, tmp_path / "good.pt")
    good_pt = (tmp_path / "good.pt").read_bytes()
    files = {
        "empty.safetensors": (b"", "the file is empty"),
        "text.safetensors": (b"hello, these are not weights\n", "not a .safetensors file"),
        "random.safetensors": (bytes(range(256)) * 8, "not a .safetensors file"),
        "truncated.safetensors": (good_st[: len(good_st) // 2], "a truncated .safetensors file"),
        "empty.pt": (b"", "the file is empty"),
        "text.pt": (b"hello\n", "not a torch checkpoint"),
        "truncated.pt": (good_pt[: len(good_pt) // 2], "truncated or corrupt"),
    }
    for name, (content, _) in files.items():
        (tmp_path / name).write_bytes(content)
    return {str(tmp_path / name): words for name, (_, words) in files.items()}


def test_check_weights_names_each_bad_file_in_one_line(tmp_path, capsys):
    files = _bad_weights_files(tmp_path)
    code = main(["check-weights", *files])
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert code == 1 and captured.err == ""  # no traceback
    assert len(lines) == len(files)
    for line, (path, words) in zip(lines, files.items(), strict=True):
        assert line.startswith(f"{path}: ") and "NOT loadable" in line and words in line, line
        assert "mmap" not in line and "zipfile" not in line and "SafetensorError" not in line


def test_check_weights_describes_each_file(tmp_path, capsys):
    generator = write_longlive(tiny_generator(0), tiny_generator(1), tmp_path / "longlive_base.pt", fsdp=True)
    vae = write_original_vae(tiny_vae(), tmp_path / "Wan2.1_VAE.pth")
    lora, _ = random_lora_file(tmp_path, rank=4, wrapped=True)
    assert check_file(generator, "tiny").error is None
    assert check_file(generator, "tiny", use_ema=True).error is None
    assert check_file(vae, "tiny").error is None
    assert "rank 4" in check_file(lora, "tiny").layout
    published = check_file(generator)  # a tiny file is not the published model
    assert published.kind == "generator" and "shape mismatches" in published.error

    code = main(["check-weights", str(generator), str(vae), "--model_name", "tiny"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    assert lines[0].endswith("loadable") and "generator, LongLive .pt ['generator'] layout" in lines[0]
    assert "vae, Wan original layout" in lines[1]


# ----------------------------------------------------------------------------------------------
# Architectures named by the config, not by a preset.
# ----------------------------------------------------------------------------------------------


def test_adapter_verbose_lists_the_lora_targets(tmp_path, caplog):
    from longlive.components import build_generator

    lora, _ = random_lora_file(tmp_path, rank=4, wrapped=True)
    with caplog.at_level(logging.INFO, logger="longlive.components"):
        build_generator(tiny_config(f"lora_ckpt={lora}", "adapter.rank=4", "adapter.verbose=true"), CPU)
    targets = lora_target_modules(tiny_generator(0))
    assert f"LoRA targets {len(targets)} linear layers: {', '.join(targets)}" in caplog.text


def test_wan_14b_preset_has_the_published_size():
    """Wan2.1-T2V-14B's config.json (dim 5120, 40 heads, 40 layers, ffn 13824): about 14.3B parameters."""
    with torch.device("meta"):
        model = CausalWanModel(PRESETS["Wan2.1-T2V-14B"].generator)
    assert 14.0e9 < sum(p.numel() for p in model.parameters()) < 14.5e9
    assert model.state_dict()["blocks.39.ffn.0.weight"].shape == (13824, 5120)


@pytest.mark.parametrize("layout", ["original", "diffusers"])
def test_config_defined_architecture_loads_a_checkpoint(tmp_path, layout):
    """A size no preset has, set in the config with Wan's or diffusers' own keys, builds and loads a
    checkpoint written in the published key layout."""
    from longlive.components import build_generator
    from longlive.presets import WanArchitecture

    # Wan2.1's text encoder and timestep embedding (text_dim 4096, freq_dim 256), a transformer of its own.
    arch = WanArchitecture(dim=48, ffn_dim=80, num_heads=3, num_layers=3)
    torch.manual_seed(3)
    source = CausalWanModel(arch)
    init_random_weights(source)
    if layout == "original":
        path = write_original(source, tmp_path / "dit.safetensors")
        shape = {"dim": 48, "ffn_dim": 80, "num_heads": 3, "num_layers": 3, "model_type": "t2v"}
    else:
        path = write_diffusers(source, tmp_path)
        shape = {"num_attention_heads": 3, "attention_head_dim": 16, "ffn_dim": 80, "num_layers": 3}
    config_json = tmp_path / "config.json"
    config_json.write_text(json.dumps(shape))
    for architecture in (f"architecture={config_json}", "architecture=" + json.dumps(shape).replace('"', "")):
        cfg = tiny_config("model_name=my-causal-wan", f"generator_ckpt={path}", architecture)
        loaded = build_generator(cfg, CPU)
        assert loaded.arch == arch
        assert all(torch.equal(loaded.state_dict()[k], v) for k, v in source.state_dict().items())

    two_layers = "architecture=" + json.dumps({**shape, "num_layers": 2}).replace('"', "")  # the file has 3
    wrong = tiny_config("model_name=my-causal-wan", f"generator_ckpt={path}", two_layers)
    with pytest.raises(WeightsError, match=r"unexpected keys: blocks\.2\."):
        build_generator(wrong, CPU)
