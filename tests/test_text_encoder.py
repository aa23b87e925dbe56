"""The prompt encoder's embedding cache: bounded, least recently used first out, same values on re-encoding."""

from __future__ import annotations

import torch
from transformers import UMT5EncoderModel

from longlive.presets import PRESETS
from longlive.text_encoder import PromptEncoder, byte_level_tokenizer, umt5_config

TINY = PRESETS["tiny"]


def counting_encoder(cache_size: int) -> tuple[PromptEncoder, list[str]]:
    """A tiny random `PromptEncoder` that records each prompt it actually runs the encoder on."""
    torch.manual_seed(0)
    encoder = PromptEncoder(
        byte_level_tokenizer(),
        UMT5EncoderModel(umt5_config(TINY.text_encoder)),
        TINY.generator.text_len,
        "cpu",
        cache_size=cache_size,
    )
    calls: list[str] = []
    real = encoder._encode

    def spy(prompt: str) -> torch.Tensor:
        calls.append(prompt)
        return real(prompt)

    encoder._encode = spy
    return encoder, calls


def test_prompt_cache_is_bounded_lru():
    encoder, calls = counting_encoder(cache_size=3)
    first = encoder.encode("p0").clone()
    for i in range(1, 20):  # a long job: many distinct prompts
        encoder.encode(f"p{i}")
        assert len(encoder.cached_prompts) <= 3
    assert encoder.cached_prompts == ["p17", "p18", "p19"]
    assert len(calls) == 20

    encoder.encode("p17")  # a hit: not encoded again, and now the most recent
    assert len(calls) == 20 and encoder.cached_prompts == ["p18", "p19", "p17"]
    encoder.encode("p20")  # evicts the least recently used, p18 (not p17, older but used since)
    assert encoder.cached_prompts == ["p19", "p17", "p20"]

    again = encoder.encode("p0")  # evicted long ago: encoded again, to the same values
    assert calls[-1] == "p0" and len(calls) == 22
    torch.testing.assert_close(again, first, atol=0, rtol=0)
