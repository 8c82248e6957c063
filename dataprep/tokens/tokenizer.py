"""Tokenizers: a byte-level BPE trained with `tokenizers`, or a pretrained one loaded as is.

Either way the result is a `transformers` fast tokenizer, saved next to the export so that
`AutoTokenizer.from_pretrained(export_dir)` needs no project code.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from schemas.data import TokenizerConfig

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"


def train_bpe_tokenizer(
    texts: Iterable[str], vocab_size: int, min_frequency: int, length: int | None = None
) -> PreTrainedTokenizerFast:
    """Byte-level BPE (GPT-2 style): every byte is in the alphabet, so nothing is unknown."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=True,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=length)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=None,
        pad_token=PAD_TOKEN,
        model_max_length=1_000_000,
    )


def load_pretrained_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    if tokenizer.eos_token is None:
        raise ValueError(
            f"tokenizer at {name_or_path!r} has no eos_token; packing needs one "
            "to separate documents"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_tokenizer(
    cfg: TokenizerConfig, train_documents, model_path: str | None
) -> PreTrainedTokenizerBase:
    """The pretrained tokenizer as is, or a BPE learned from the first cfg.sample_documents
    of ``train_documents`` (a Ray dataset of the kept training documents, in corpus order),
    streamed to this process: a bounded, deterministic sample, never all at once."""
    if cfg.kind != "train-bpe":
        return load_pretrained_tokenizer(cfg.name_or_path or model_path)
    sample = train_documents.limit(cfg.sample_documents).select_columns(["text"])
    texts = (row["text"] for row in sample.iter_rows())
    return train_bpe_tokenizer(texts, cfg.vocab_size, cfg.min_frequency)
