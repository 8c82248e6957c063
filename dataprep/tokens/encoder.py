"""A saved tokenizer as the pipeline's tasks use it: the Rust `tokenizers` object read from
``tokenizer.json``, without importing transformers (which brings torch: ~260 MB more in
every Ray worker, measured), encoding a list of texts to ids only."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

_LOADED: dict[str, tuple[Callable[[list[str]], list[list[int]]], int]] = {}


def batch_encoder(tokenizer_dir: str) -> tuple[Callable[[list[str]], list[list[int]]], int]:
    """(encode(texts) -> token ids without special tokens, the EOS id), once per process."""
    if tokenizer_dir not in _LOADED:
        _LOADED[tokenizer_dir] = _rust(Path(tokenizer_dir)) or _transformers(tokenizer_dir)
    return _LOADED[tokenizer_dir]


def _rust(directory: Path):
    config = directory / "tokenizer_config.json"
    if not (directory / "tokenizer.json").exists() or not config.exists():
        return None
    eos = json.loads(config.read_text()).get("eos_token")
    eos = eos.get("content") if isinstance(eos, dict) else eos
    from tokenizers import Tokenizer

    backend = Tokenizer.from_file(str(directory / "tokenizer.json"))
    eos_id = backend.token_to_id(eos) if eos else None
    if eos_id is None:
        return None

    def encode(texts: list[str]) -> list[list[int]]:
        # _fast: no offsets computed; only the ids leave the Encoding objects.
        return [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=False)]

    return encode, eos_id


def _transformers(tokenizer_dir: str):
    """A tokenizer with no Rust version (or no EOS in its config): through transformers."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)

    def encode(texts: list[str]) -> list[list[int]]:
        return tokenizer(texts, add_special_tokens=False)["input_ids"]

    return encode, tokenizer.eos_token_id
