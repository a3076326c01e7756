"""Tiny from-scratch chat models: a locally trained tokenizer and a small Qwen2/Llama model.

Nothing comes from the Hugging Face hub. The folder written by :func:`save_pair_folder` is a
standard ``save_pretrained`` folder (config.json, model.safetensors, tokenizer.json, chat
template) that both transformers and SGLang load.

    tok = train_tokenizer(texts, vocab_size=512)          # ChatML special tokens, eos = <|im_end|>
    model = make_model(tok, hidden_size=64, num_layers=2, seed=0)
    save_pair_folder(model, tok, "runs/pair/reference")
    # later: TransformersBackend("runs/pair/reference")

The tokenizer is byte-level BPE with Qwen2's pre-tokenizer (any text encodes, nothing maps to
an unknown token; digits split one per token), so frequent words ("north", "wall") become single tokens while
numbers stay compositional.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from ttsearch.envs.errors import ConfigError

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
END_OF_TEXT = "<|endoftext|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = (END_OF_TEXT, IM_START, IM_END, PAD)

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""ChatML: every message is closed by a special token, so per-message segments tokenise
exactly as the whole conversation does (what PromptRenderer relies on)."""

ARCHITECTURES = ("qwen2", "llama")

# Qwen2's pre-tokenisation regex (GPT-4 style; \p{N} keeps every digit a separate token).
QWEN2_PRETOKENIZE_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""


def train_tokenizer(texts: Iterable[str], *, vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer with ChatML special tokens on ``texts``."""

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    minimum = len(alphabet) + len(SPECIAL_TOKENS)
    if vocab_size < minimum:
        raise ConfigError(
            f"vocab_size must be >= {minimum} (256 bytes + special tokens), got {vocab_size}"
        )
    tok = Tokenizer(models.BPE())
    # Exactly the Qwen2 pipeline: AutoTokenizer rebuilds a saved qwen2-type folder with
    # Qwen2Tokenizer's own normalizer/pre-tokenizer, so training with any other one would make
    # the reloaded tokenizer split text differently from the one the model was trained with.
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=alphabet,
        show_progress=False,
    )
    # The templates' own text must be in the training data so "user\n" etc. merge sensibly.
    scaffold = [f"{IM_START}{role}\n" for role in ("system", "user", "assistant")]
    tok.train_from_iterator([*scaffold, *texts], trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=PAD,
        unk_token=None,
        bos_token=None,
        additional_special_tokens=[IM_START, END_OF_TEXT],
    )
    fast.chat_template = CHATML_TEMPLATE
    fast.padding_side = "left"
    return fast


def make_model(
    tokenizer,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int | None = None,
    intermediate_size: int = 256,
    max_position_embeddings: int = 1024,
    arch: str = "qwen2",
    init_std: float = 0.02,
    seed: int = 0,
) -> PreTrainedModel:
    """A randomly initialised float32 causal LM sized for ``tokenizer`` (tied embeddings).

    ``init_std`` is the weight init scale; larger values give peakier (less uniform) random
    next-token distributions, which tests use to make argmax decisions unambiguous.
    """

    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown arch {arch!r}; choose one of: {', '.join(ARCHITECTURES)}")
    if hidden_size % num_heads:
        raise ConfigError(
            f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})"
        )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    im_end = tokenizer.convert_tokens_to_ids(IM_END)
    eos_ids = [i for i in (im_end, ids.get(END_OF_TEXT)) if i is not None]
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads or num_heads,
        max_position_embeddings=max_position_embeddings,
        initializer_range=init_std,
        tie_word_embeddings=True,
        bos_token_id=ids.get(END_OF_TEXT),
        eos_token_id=eos_ids,
        pad_token_id=tokenizer.pad_token_id,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        dtype="float32",
    )
    Config, Model = (Qwen2Config, Qwen2ForCausalLM) if arch == "qwen2" else (LlamaConfig, LlamaForCausalLM)
    config = Config(**common)
    # fork_rng: a model seed must not disturb the caller's global torch RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Model(config).to(torch.float32)
    model.generation_config.eos_token_id = eos_ids
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = ids.get(END_OF_TEXT)
    model.eval()
    return model


def save_pair_folder(model, tokenizer, path: str | Path) -> Path:
    """Write ``model`` and ``tokenizer`` into one Hugging Face folder; returns the path."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
