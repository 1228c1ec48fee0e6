"""Tiny real language models built locally: Qwen3 architecture + a byte-level tokenizer.

No model hub is reachable from our machines, so tests and the toy world build their own
checkpoints. Everything downstream loads them with ``from_pretrained`` exactly like a real
checkpoint, which keeps the real loading path tested.

Tokenizer: 256 byte symbols (any UTF-8 text round-trips), special tokens for the chat roles
and end of turn, plus optional "merged" plain-text tokens (e.g. ``<<CONFIDENCE=``) that make
boilerplate one token long — the prototype found this ~2.7x faster than pure bytes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

PAD, EOS = "<|pad|>", "<|end|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|tool|>")
SPECIAL_TOKENS = (PAD, EOS, *ROLE_TOKENS)

# Compact chat template: <|role|>content<|end|> per message; the generation prompt is
# <|assistant|>. The model's reply ends with <|end|> (= EOS), so a sampled response's last
# token is scored by teachers like any other token.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

DEFAULT_MERGED = ("<<CONFIDENCE=", ">>")


@dataclass
class TinySpec:
    """Size of a tiny Qwen3 model. head_dim stays >= 32 because vLLM needs it."""

    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 32
    intermediate_size: int = 256
    max_positions: int = 512
    merged_tokens: tuple[str, ...] = DEFAULT_MERGED
    seed: int = 0
    extra: dict = field(default_factory=dict)  # forwarded to Qwen3Config


def build_tokenizer(merged_tokens: tuple[str, ...] = DEFAULT_MERGED):
    """A transformers fast tokenizer: bytes + specials + merged tokens, with our chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()  # 256 printable stand-ins for the bytes
    vocab = {sym: i for i, sym in enumerate(sorted(alphabet))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], ignore_merges=True))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(list(SPECIAL_TOKENS))
    core.add_tokens(list(merged_tokens))
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=PAD, eos_token=EOS,
        additional_special_tokens=list(ROLE_TOKENS),
    )
    tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "right"
    return tok


def build_tiny_model(path: str | Path, spec: TinySpec | None = None):
    """Create a randomly initialised tiny Qwen3 causal LM + tokenizer and save both to ``path``.

    Returns ``(model, tokenizer)``; load later with ``AutoModelForCausalLM.from_pretrained``.
    """
    from transformers import Qwen3Config, Qwen3ForCausalLM

    spec = spec or TinySpec()
    tok = build_tokenizer(tuple(spec.merged_tokens))
    config = Qwen3Config(
        vocab_size=len(tok),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        head_dim=spec.head_dim,
        max_position_embeddings=spec.max_positions,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=None,
        **spec.extra,
    )
    torch.manual_seed(spec.seed)
    model = Qwen3ForCausalLM(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    spec_dict = asdict(spec)
    spec_dict["merged_tokens"] = list(spec.merged_tokens)
    (path / "madopd_tiny_spec.json").write_text(json.dumps(spec_dict, indent=2))
    return model, tok


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
