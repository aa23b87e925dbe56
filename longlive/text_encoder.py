"""Prompt embeddings from transformers' UMT5 encoder, computed once per prompt.

Wan conditions on the encoder's last hidden state, `text_len` tokens long, with every position past
the prompt set to zero (the network's text embedding then sees zeros there, as in Wan).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Generic, Protocol, TypeVar

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

from longlive.presets import TextEncoderArchitecture


class PromptSource(Protocol):
    """What the pipeline needs from a text encoder: a prompt's embeddings [1, text_len, text_dim]."""

    def encode(self, prompt: str) -> torch.Tensor: ...


def clean_prompt(prompt: str) -> str:
    """Collapse whitespace, as Wan's tokenizer wrapper does."""
    return re.sub(r"\s+", " ", prompt).strip()


# Prompts whose embeddings `PromptEncoder` keeps (least recently used dropped first). An embedding is
# [1, 512, 4096] (4 MiB in bf16), on the GPU outside low-VRAM mode: a job of 10,000 samples would
# otherwise keep 20,000 of them. A sample or a session switch reuses its few prompts, well within 16.
PROMPT_CACHE_SIZE = 16


V = TypeVar("V")


class RecentlyUsed(OrderedDict, Generic[V]):
    """Values by prompt, the `limit` most recently used only (least recent first): the per-prompt caches
    of long jobs and live sessions, which would otherwise grow with every distinct prompt."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def __getitem__(self, prompt: str) -> V:
        value = super().__getitem__(prompt)
        self.move_to_end(prompt)
        return value

    def __setitem__(self, prompt: str, value: V) -> None:
        super().__setitem__(prompt, value)
        self.move_to_end(prompt)
        while len(self) > self.limit:
            self.popitem(last=False)


class PromptEncoder:
    """Tokenizer + UMT5 encoder with a bounded cache of embeddings [1, text_len, d_model] per prompt."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        encoder: UMT5EncoderModel,
        text_len: int,
        device: torch.device | str = "cpu",
        cache_size: int = PROMPT_CACHE_SIZE,
    ) -> None:
        if cache_size < 1:
            raise ValueError(f"cache_size={cache_size} must be at least 1")
        self.tokenizer = tokenizer
        self.encoder = encoder.eval().requires_grad_(False)
        self.text_len = text_len
        self.device = torch.device(device)
        self.cache_size = cache_size
        self._cache: RecentlyUsed[torch.Tensor] = RecentlyUsed(cache_size)

    @torch.no_grad()
    def encode(self, prompt: str) -> torch.Tensor:
        """Embeddings of `prompt` [1, text_len, d_model], zero past the prompt's tokens; the last
        `cache_size` prompts used are kept, so a prompt seen again is not encoded again."""
        if prompt not in self._cache:
            self._cache[prompt] = self._encode(clean_prompt(prompt))
        return self._cache[prompt]

    @property
    def cached_prompts(self) -> list[str]:
        """The prompts whose embeddings are kept, least recently used first."""
        return list(self._cache)

    def _encode(self, prompt: str) -> torch.Tensor:
        return embed_prompts(self.tokenizer, self.encoder, [prompt], self.text_len)

    def clear(self) -> None:
        self._cache.clear()


def embed_prompts(
    tokenizer: PreTrainedTokenizerBase, encoder: UMT5EncoderModel, prompts: list[str], text_len: int
) -> torch.Tensor:
    """Prompts -> embeddings [B, text_len, d_model] on the encoder's device, zero past each prompt's tokens.

    The one definition inference (`PromptEncoder`) and the demo model's training share, so a model
    trained on these embeddings sees exactly them at inference."""
    tokens = tokenizer(
        [clean_prompt(p) for p in prompts],
        padding="max_length",
        max_length=text_len,
        truncation=True,
        add_special_tokens=True,
        return_attention_mask=True,
        return_tensors="pt",
    )
    device = encoder.get_input_embeddings().weight.device
    ids, mask = tokens.input_ids.to(device), tokens.attention_mask.to(device)
    hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state  # [B, L, D]
    return hidden * mask.unsqueeze(-1).to(hidden.dtype)


def byte_level_tokenizer() -> PreTrainedTokenizerFast:
    """A self-contained byte-level tokenizer (256 bytes + pad/eos/unk) for tiny random text encoders."""
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):  # the alphabet comes unordered
        vocab[symbol] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def umt5_config(arch: TextEncoderArchitecture) -> UMT5Config:
    return UMT5Config(
        vocab_size=arch.vocab_size,
        d_model=arch.d_model,
        d_kv=arch.d_kv,
        d_ff=arch.d_ff,
        num_layers=arch.num_layers,
        num_heads=arch.num_heads,
        relative_attention_num_buckets=arch.relative_attention_num_buckets,
        relative_attention_max_distance=arch.relative_attention_max_distance,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
        use_cache=False,
    )
