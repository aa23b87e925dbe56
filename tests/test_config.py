"""Config loading, validation and derived geometry (longlive/config.py)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ReadonlyConfigError

from longlive.config import SPEED_SWITCHES, ConfigError, InferenceConfig, derive_geometry, load_config
from longlive.presets import PRESETS, model_preset

REPO = Path(__file__).resolve().parents[1]
TINY_YAML = REPO / "configs" / "tiny_video_conditional.yaml"


def _write_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


# -- loading ---------------------------------------------------------------------------------------


def test_defaults_are_the_published_settings():
    cfg = load_config()
    assert cfg.model_name == "Wan2.1-T2V-1.3B"
    assert list(cfg.denoising_step_list) == [1000.0, 750.0, 500.0, 250.0]
    assert cfg.warp_denoising_step is True
    assert cfg.num_frame_per_block == 3
    assert cfg.model_kwargs.local_attn_size == 12
    assert cfg.model_kwargs.sink_size == 3
    assert cfg.model_kwargs.timestep_shift == 5.0
    assert cfg.num_output_frames == 240
    assert (cfg.height, cfg.width) == (480, 832)
    assert cfg.dtype == "bfloat16"
    assert cfg.seed == 0


def test_loaded_config_is_read_only():
    cfg = load_config()
    with pytest.raises(ReadonlyConfigError):
        cfg.seed = 1
    assert OmegaConf.is_readonly(cfg)


def test_tiny_yaml_loads():
    cfg = load_config(TINY_YAML)
    assert cfg.model_name == "tiny"
    assert cfg.model_kwargs.local_attn_size == 6
    assert cfg.model_kwargs.sink_size == 1
    assert cfg.num_output_frames == 12
    assert cfg.num_conditioning_frames == 9
    assert (cfg.height, cfg.width) == (32, 48)
    assert cfg.dtype == "float32"
    assert cfg.device == "cpu"
    # Keys absent from the YAML keep their dataclass defaults.
    assert cfg.fps == 16
    assert cfg.use_ema is False

    geo = derive_geometry(cfg)
    assert geo.latents_for_video_frames(cfg.num_conditioning_frames) == 3  # 9 video frames -> 3 latents
    assert geo.video_frames_for_latents(cfg.num_output_frames) == 45
    assert (geo.latent_height, geo.latent_width) == (32 // 8, 48 // 8)
    assert geo.frame_tokens == (32 // 8 // 2) * (48 // 8 // 2)
    assert (geo.cache_frames, geo.sink_frames) == (6, 1)
    tiny = PRESETS["tiny"].generator
    assert (geo.num_layers, geo.num_heads, geo.head_dim) == (
        tiny.num_layers,
        tiny.num_heads,
        tiny.dim // tiny.num_heads,
    )


def test_overrides_take_effect_over_defaults_and_yaml():
    assert load_config(overrides=["num_output_frames=20"]).num_output_frames == 20
    cfg = load_config(TINY_YAML, overrides=["num_output_frames=20", "model_kwargs.sink_size=2", "seed=7"])
    assert cfg.num_output_frames == 20
    assert cfg.model_kwargs.sink_size == 2
    assert cfg.model_kwargs.local_attn_size == 6  # sibling nested key from the YAML is kept
    assert cfg.seed == 7
    assert cfg.model_name == "tiny"


def test_override_beats_yaml(tmp_path):
    path = _write_yaml(tmp_path, "num_output_frames: 30\nseed: 3\n")
    assert load_config(path).num_output_frames == 30
    cfg = load_config(path, overrides=["num_output_frames=21"])
    assert cfg.num_output_frames == 21
    assert cfg.seed == 3


# -- errors: each names the offending key ----------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["foo=1"], "foo"),
        (["model_kwargs.foo=1"], "model_kwargs.foo"),
        (["seed=abc"], "seed"),
        (["model_name=Wan9-T2V"], "model_name"),
        (["dtype=float64"], "dtype"),
        (["height=488"], "height"),  # 488 = 61 * 8: a VAE multiple but not VAE stride x patch (16)
        (["width=840"], "width"),
        (["model_kwargs.local_attn_size=5"], "num_frame_per_block"),  # 3 > 5 - 3
        (["num_frame_per_block=10"], "num_frame_per_block"),  # 10 > 12 - 3
        (["model_kwargs.sink_size=12"], "model_kwargs.sink_size"),  # sink == local
        (["model_kwargs.sink_size=13"], "model_kwargs.sink_size"),  # sink > local
        (["num_output_frames=10"], "num_output_frames"),  # 40 video frames -> 10 latents, nothing left
        (["num_output_frames=5"], "num_output_frames"),
        (["denoising_step_list=[250,500,750,1000]"], "denoising_step_list"),
        (["denoising_step_list=[1000,500,750]"], "denoising_step_list"),
        (["save_with_index=false"], "save_with_index"),  # prompt-named outputs: refused, not ignored
        (["adapter.type=lokr"], "adapter.type"),
        (["adapter.dtype=int8"], "adapter.dtype"),
        (["adapter.rank=0"], "adapter.rank"),
        (["architecture.dimm=5120"], "architecture.dimm"),  # unknown architecture key
        (["architecture.dim=1500"], "num_heads"),  # 1500 / 12 heads
        (["architecture.num_layers=0"], "architecture.num_layers"),
        (["architecture.num_layers=two"], "architecture.num_layers"),
        (["architecture.text_dim=1024"], "architecture.text_dim"),  # UMT5-XXL gives 4096
        (["architecture.in_dim=36"], "architecture.in_dim"),  # an image-to-video model's input
        (["architecture.model_type=i2v"], "architecture.model_type"),
        (["architecture.patch_size=[2,2,2]"], "architecture.patch_size"),
        (["architecture.num_attention_heads=12", "architecture.attention_head_dim=64", "architecture.dim=1536"], "dim"),
        (["architecture.num_attention_heads=16", "architecture.num_heads=12"], "num_heads"),
        (["model_name=my-wan", "architecture.dim=1536"], "architecture.ffn_dim"),  # no preset: the size is needed
    ],
)
def test_override_errors_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=overrides)
    assert key in str(info.value)


def test_output_just_one_frame_past_conditioning_is_accepted():
    # 40 video frames -> 37 used -> 10 latent frames; 11 output frames leaves one to generate.
    assert load_config(overrides=["num_output_frames=11"]).num_output_frames == 11


def test_window_exactly_fitting_the_block_is_accepted():
    cfg = load_config(overrides=["model_kwargs.local_attn_size=6"])  # 6 - 3 == num_frame_per_block
    assert derive_geometry(cfg).cache_frames == 6


def test_unknown_key_in_yaml(tmp_path):
    path = _write_yaml(tmp_path, "num_output_frame: 20\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "num_output_frame" in str(info.value)
    assert str(path) in str(info.value)  # the source is named too


def test_unknown_nested_key_in_yaml(tmp_path):
    path = _write_yaml(tmp_path, "model_kwargs:\n  local_attn_size: 12\n  sinksize: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "model_kwargs.sinksize" in str(info.value)


def test_wrong_type_in_yaml(tmp_path):
    path = _write_yaml(tmp_path, "num_frame_per_block: three\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "num_frame_per_block" in str(info.value)


def test_bad_values_in_yaml_are_validated(tmp_path):
    path = _write_yaml(tmp_path, "dtype: float64\n")
    with pytest.raises(ConfigError, match="dtype"):
        load_config(path)


def test_recache_mode_is_validated():
    """LongLive's recache is the default; window mode never rewrites sinks, so global_sink=false is refused."""
    assert load_config().recache_mode == "longlive"
    assert load_config(overrides=["recache_mode=window"]).recache_mode == "window"
    with pytest.raises(ConfigError, match=r"^recache_mode='dense' is not one of \('longlive', 'window'\)$"):
        load_config(overrides=["recache_mode=dense"])
    with pytest.raises(ConfigError, match=r"^global_sink=false .* use recache_mode=longlive$"):
        load_config(overrides=["recache_mode=window", "global_sink=false"])
    assert not load_config(overrides=["global_sink=false"]).global_sink


def test_missing_config_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert "nope.yaml" in str(info.value)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "not a text (YAML) file"),
        (b"seed: [1,\nnum_samples: 2\n", "not valid YAML at line"),
        (b"- seed\n- 1\n", "must be a YAML mapping"),
        (b"just some words\n", "unknown key 'just some words'"),
    ],
)
def test_config_file_that_is_not_yaml(tmp_path, content, words):
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert words in str(info.value) and str(path) in str(info.value)
    assert len(str(info.value).splitlines()) == 1


def test_architecture_names_a_size_and_a_preset_alias():
    cfg = load_config(overrides=["model_name=Wan2.1-T2V-14B-Diffusers"])
    assert model_preset(cfg) == PRESETS["Wan2.1-T2V-14B"]
    assert derive_geometry(cfg).num_layers == 40 and derive_geometry(cfg).head_dim == 128
    diffusers_keys = ["architecture.num_attention_heads=40", "architecture.attention_head_dim=128"]
    wan_keys = ["architecture.dim=5120", "architecture.ffn_dim=13824", "architecture.num_layers=40"]
    own = load_config(overrides=["model_name=my-14b", *diffusers_keys, *wan_keys[1:]])
    assert model_preset(own).generator == PRESETS["Wan2.1-T2V-14B"].generator
    assert (
        model_preset(load_config(overrides=["model_name=my-14b", *wan_keys, "architecture.num_heads=40"]))
        == (PRESETS["Wan2.1-T2V-14B"])
    )


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


# -- geometry --------------------------------------------------------------------------------------


def test_geometry_of_published_defaults():
    geo = derive_geometry(load_config())
    assert (geo.latent_height, geo.latent_width) == (480 // 8, 832 // 8) == (60, 104)
    assert geo.frame_tokens == (480 // 8 // 2) * (832 // 8 // 2) == 1560
    assert geo.latent_channels == 16
    assert geo.frames_per_block == 3
    assert geo.cache_frames == 12
    assert geo.sink_frames == 3
    assert geo.num_layers == 30
    assert geo.num_heads == 12
    assert geo.head_dim == 128 == 1536 // 12
    assert geo.text_len == 512
    assert geo.vae_temporal_stride == 4
    assert geo.cache_tokens == 12 * 1560


def test_geometry_global_attention():
    cfg = load_config(overrides=["model_kwargs.local_attn_size=-1", "num_output_frames=20"])
    geo = derive_geometry(cfg)
    assert geo.cache_frames == cfg.num_output_frames == 20
    assert geo.sink_frames == 0


def test_geometry_follows_overrides():
    geo = derive_geometry(load_config(overrides=["height=320", "width=576", "model_kwargs.local_attn_size=9"]))
    assert (geo.latent_height, geo.latent_width) == (40, 72)
    assert geo.frame_tokens == 20 * 36
    assert geo.cache_frames == 9


def test_video_latent_frame_arithmetic():
    geo = derive_geometry(load_config())
    for t in (1, 2, 3, 10, 60, 240):
        assert geo.video_frames_for_latents(t) == 4 * t - 3
    assert geo.video_frames_for_latents(0) == 0
    assert geo.latents_for_video_frames(40) == 10  # uses 37 = 4*9 + 1 of the 40 frames
    assert geo.video_frames_for_latents(10) == 37
    assert geo.latents_for_video_frames(37) == 10
    assert geo.latents_for_video_frames(36) == 9
    assert geo.latents_for_video_frames(1) == 1
    assert geo.latents_for_video_frames(0) == 0
    # Round trip: decoding T latents and re-encoding gives T back.
    for t in range(50):
        assert geo.latents_for_video_frames(geo.video_frames_for_latents(t)) == t


def test_speed_switches_are_the_configs_switches_in_the_readmes_order():
    """`SPEED_SWITCHES` (what `longlive bench` reports) names every speed switch: off-by-default booleans
    of the config, listed in the README's switch table in the same order."""
    fields = {field.name: field for field in dataclasses.fields(InferenceConfig)}
    assert all(fields[name].type in (bool, "bool") and fields[name].default is False for name in SPEED_SWITCHES)
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("| switch | what it does |") :].split("\n\n")[0]
    assert re.findall(r"^\| `(\w+)` \|", table, flags=re.MULTILINE) == list(SPEED_SWITCHES)


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    """Each config in configs/ validates as it is (a key renamed or a rule added elsewhere breaks none)."""
    cfg = load_config(path)
    assert derive_geometry(cfg).frames_per_block == cfg.num_frame_per_block


def test_readme_layout_names_every_module():
    """The README's layout table names every module of the package (a new module comes with its row)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("## Layout") :].split("\n## ")[0]
    rows = " ".join(line for line in table.splitlines() if line.startswith("| `"))
    missing = [
        path.name
        for path in sorted((REPO / "longlive").glob("*.py"))
        if path.name != "__init__.py" and f"`longlive/{path.name}`" not in rows and f"`{path.name}`" not in rows
    ]
    assert missing == [], f"modules without a row in README's Layout: {missing}"
