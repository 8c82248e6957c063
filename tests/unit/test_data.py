"""Data path: cleaning, the embedded corpus, splitting, tokenizer, packing, cached preparation."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import datasets
import pytest
from tokenizers import pre_tokenizers
from transformers import AutoTokenizer

from dataprep.cleaning import clean_text
from dataprep.corpus import Document
from dataprep.filtering.corpus_filter import CorpusFilter
from dataprep.packing import tokenize_and_pack
from dataprep.pretrain_data import prepare_data, split_documents
from dataprep.tokenizer import EOS_TOKEN, PAD_TOKEN
from schemas.data import DataConfig, TokenizerConfig
from schemas.fields import ConfigError
from schemas.filters import DecontamConfig, DedupConfig, QualityConfig

SENTENCE = "The quick brown fox jumps over the lazy dog, and then it reads the manual."


# --- cleaning ----------------------------------------------------------------------------------


def test_clean_text_nfc_normalizes_decomposed_accent():
    decomposed = "cafe\u0301 au lait"
    cleaned = clean_text(decomposed)
    assert cleaned == "caf\u00e9 au lait"
    assert len(cleaned) == len(decomposed) - 1


def test_clean_text_removes_control_characters_but_keeps_tab_and_newline():
    raw = "a\x00b\x07c\td\ne\x0bf\x0cg\x1bh\x7fi\x85j"
    assert clean_text(raw) == "abc\td\nefghij"


def test_clean_text_normalizes_line_endings_and_blank_runs():
    assert clean_text("  one\r\ntwo\rthree   \n\n\n\n\nfour  ") == "one\ntwo\nthree\n\nfour"


def cleaning_only(min_chars: int) -> DataConfig:
    """Every filter but cleaning, min_chars and exact deduplication switched off."""
    no_rules = {f.name: None for f in dataclasses.fields(QualityConfig)}
    return DataConfig(
        min_chars=min_chars,
        pii=False,
        quality=QualityConfig(**no_rules),
        dedup=DedupConfig(near=False),
        decontam=DecontamConfig(enabled=False),
    )


def test_clean_documents_counts_every_outcome():
    long = "A sentence that is comfortably longer than the minimum length. "
    docs = [
        Document("a", long + "one"),
        Document("a", "   \x00\x01  \n\n "),  # empty once cleaned
        Document("b", "too short"),
        Document("b", long + "two"),
        Document("c", long + "one   \r\n"),  # same text as the first once cleaned
        Document("c", ""),
        Document("d", "cafe\u0301 " + long),
        Document("d", "caf\u00e9 " + long),  # the NFC form of the one above
    ]
    chain = CorpusFilter(cleaning_only(min_chars=40))
    kept = list(chain.run(docs))
    chain.count_kept(kept)
    assert chain.counts == Counter(
        read=8, kept=3, dropped_empty=2, dropped_short=1, dropped_duplicate=2
    )
    assert [d.source for d in kept] == ["a", "b", "d"]
    assert kept[0].text == (long + "one")
    assert all(len(d.text) >= 40 for d in kept)


def test_clean_documents_min_chars_zero_keeps_short_text():
    kept = list(CorpusFilter(cleaning_only(min_chars=0)).run([Document("s", "hi")]))
    assert [d.text for d in kept] == ["hi"]


# --- the embedded corpus --------------------------------------------------------------------------

CORPUS_PROBE = """
import json, sys
from dataprep.corpus import pydoc_corpus
docs = list(pydoc_corpus())
side_effect_modules = ["this", "antigravity", "tkinter", "turtle", "idlelib",
                       "pydoc_data.topics", "webbrowser"]
print(json.dumps({
    "documents": len(docs),
    "topics": sum(d.source.startswith("pydoc_data/topics.py#") for d in docs),
    "chars": sum(len(d.text) for d in docs),
    "bytes": sum(len(d.text.encode()) for d in docs),
    "imported": [m for m in side_effect_modules if m in sys.modules],
    "test_sources": sum("/test/" in "/" + d.source for d in docs),
}))
"""


def test_pydoc_corpus_is_read_without_importing_stdlib_modules():
    proc = subprocess.run(
        [sys.executable, "-c", CORPUS_PROBE],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    # `import this` prints the Zen of Python: nothing may have been executed, only parsed.
    assert "Beautiful is better than ugly" not in proc.stdout
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["imported"] == []
    assert result["topics"] >= 50
    assert result["documents"] > 3000
    assert result["bytes"] > 1_000_000
    assert result["test_sources"] == 0


def test_pydoc_docs_fixture_is_real_english(pydoc_docs):
    assert len(pydoc_docs) == 300
    text = " ".join(d.text for d in pydoc_docs)
    for word in (" the ", " and ", " is "):
        assert text.count(word) > 100


# --- splitting ----------------------------------------------------------------------------------


def _many_source_docs() -> list[Document]:
    return [
        Document(f"dir/file-{i:03d}.txt", f"document {j} of file {i}")
        for i in range(60)
        for j in range(5)
    ]


def test_split_is_deterministic():
    docs = _many_source_docs()
    assert split_documents(docs, 0.2) == split_documents(list(docs), 0.2)


def test_split_never_puts_one_source_on_both_sides():
    docs = _many_source_docs()
    train, val = split_documents(docs, 0.2)
    assert train and val
    assert len(train) + len(val) == len(docs)
    train_sources = {d.source for d in train}
    val_sources = {d.source for d in val}
    assert not train_sources & val_sources
    assert 0.05 < len(val_sources) / 60 < 0.45  # roughly the requested share of sources


def test_split_of_a_single_source_still_holds_out_documents():
    docs = [Document("one.txt", f"paragraph {i}") for i in range(40)]
    train, val = split_documents(docs, 0.1)
    assert train and val
    assert sorted(d.text for d in train + val) == sorted(d.text for d in docs)
    assert not {d.text for d in train} & {d.text for d in val}


# --- tokenizer ----------------------------------------------------------------------------------


def test_tokenizer_vocab_size_is_respected(tiny_tokenizer):
    assert len(tiny_tokenizer) == 400
    vocab = tiny_tokenizer.get_vocab()
    assert max(vocab.values()) == 399
    # Byte-level: all 256 byte symbols are in the vocabulary, so nothing is unknown.
    assert set(pre_tokenizers.ByteLevel.alphabet()) <= set(vocab)


def test_tokenizer_special_tokens(tiny_tokenizer):
    assert tiny_tokenizer.eos_token == EOS_TOKEN
    assert tiny_tokenizer.pad_token == PAD_TOKEN
    eos, pad = tiny_tokenizer.eos_token_id, tiny_tokenizer.pad_token_id
    assert eos is not None and pad is not None and eos != pad
    assert 0 <= eos < 400 and 0 <= pad < 400
    assert tiny_tokenizer.convert_ids_to_tokens([eos, pad]) == [EOS_TOKEN, PAD_TOKEN]
    # The special tokens encode as one id each, not as their characters.
    assert tiny_tokenizer(EOS_TOKEN, add_special_tokens=False)["input_ids"] == [eos]


@pytest.mark.parametrize("text", [SENTENCE, "Naïve café — 日本語 🙂\n\tindented"])
def test_tokenizer_round_trip(tiny_tokenizer, text):
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert all(0 <= i < 400 for i in ids)
    assert tiny_tokenizer.decode(ids) == text


def test_tokenizer_learned_merges(tiny_tokenizer):
    ids = tiny_tokenizer(SENTENCE, add_special_tokens=False)["input_ids"]
    assert len(ids) < len(SENTENCE.encode()) * 0.8  # fewer tokens than bytes: merges exist


def test_tokenizer_save_and_autotokenizer_give_identical_ids(tiny_tokenizer, tmp_path):
    tiny_tokenizer.save_pretrained(str(tmp_path / "tok"))
    loaded = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    for text in (SENTENCE, "def f(x):\n    return x ** 2  # squared"):
        assert loaded(text)["input_ids"] == tiny_tokenizer(text)["input_ids"]
    assert loaded.eos_token_id == tiny_tokenizer.eos_token_id
    assert loaded.pad_token_id == tiny_tokenizer.pad_token_id
    assert len(loaded) == len(tiny_tokenizer)


# --- packing ------------------------------------------------------------------------------------

PACK_BATCH = 1000  # a small pack batch size here: the tail of each batch is dropped


@pytest.fixture(scope="module")
def pack_texts(pydoc_docs) -> list[str]:
    # 1,200 short documents: two pack batches (1,000 + 200).
    return [f"{i}: {pydoc_docs[i % len(pydoc_docs)].text[:300]}" for i in range(1200)]


def test_tokenize_and_pack(tiny_tokenizer, pack_texts):
    seq_len = 64
    eos = tiny_tokenizer.eos_token_id
    packed = tokenize_and_pack(
        datasets.Dataset.from_dict({"text": pack_texts}),
        tiny_tokenizer,
        seq_len,
        batch_docs=PACK_BATCH,
    )
    rows = packed["input_ids"]
    assert packed.column_names == ["input_ids"]
    assert rows and all(len(r) == seq_len for r in rows)

    docs = [tiny_tokenizer(t, add_special_tokens=False)["input_ids"] for t in pack_texts]
    assert all(eos not in d for d in docs)
    tokenized = sum(len(d) + 1 for d in docs)  # +1: the EOS after every document
    tails = []
    for start in range(0, len(docs), PACK_BATCH):
        batch_tokens = sum(len(d) + 1 for d in docs[start : start + PACK_BATCH])
        tails.append(batch_tokens % seq_len)
    assert all(t < seq_len for t in tails)
    assert len(rows) * seq_len == tokenized - sum(tails)

    # EOS separates documents: the packed stream starts doc0 EOS doc1 EOS doc2 EOS ...
    stream = [t for r in rows for t in r]
    head = [t for d in docs[:20] for t in (*d, eos)]
    assert stream[: len(head)] == head
    # The second pack batch starts a fresh row with document 1,000.
    first_batch_rows = (sum(len(d) + 1 for d in docs[:PACK_BATCH]) - tails[0]) // seq_len
    expected_start = [*docs[PACK_BATCH], eos][:seq_len]
    assert rows[first_batch_rows][: len(expected_start)] == expected_start
    # Exactly: each pack batch's stream (doc EOS doc EOS ...) minus its short tail.
    expected: list[int] = []
    for start, tail in zip(range(0, len(docs), PACK_BATCH), tails):
        batch_stream = [t for d in docs[start : start + PACK_BATCH] for t in (*d, eos)]
        expected += batch_stream[: len(batch_stream) - tail]
    assert stream == expected


def test_pack_drops_a_corpus_shorter_than_one_row(tiny_tokenizer):
    packed = tokenize_and_pack(datasets.Dataset.from_dict({"text": ["tiny"]}), tiny_tokenizer, 64)
    assert len(packed) == 0


# --- prepare_data (cached) ------------------------------------------------------------------------


def _prepare(paths: str, cache: Path, seq_len: int = 32):
    data = DataConfig(source="text-files", paths=[paths], validation_fraction=0.2)
    return prepare_data(data, TokenizerConfig(vocab_size=400), seq_len, str(cache))


def test_prepare_data_is_cached(text_corpus, tmp_path):
    cache = tmp_path / "cache"
    first = _prepare(text_corpus, cache)
    assert first.cache_hit is False
    stats = first.stats
    assert stats["cleaning"]["kept"] > 0
    assert stats["documents"]["train"] > 0 and stats["documents"]["validation"] > 0
    assert stats["vocab_size"] == 400 and stats["seq_len"] == 32

    ds = datasets.load_from_disk(first.dataset_dir)
    assert set(ds) == {"train", "validation"}
    for split in ("train", "validation"):
        assert len(ds[split]) == stats["sequences"][split] > 0
        assert stats["tokens"][split] == len(ds[split]) * 32
        assert all(len(r) == 32 for r in ds[split]["input_ids"][:50])
    tokenizer = AutoTokenizer.from_pretrained(first.tokenizer_dir)
    assert len(tokenizer) == 400
    assert max(max(r) for r in ds["train"]["input_ids"]) < 400

    second = _prepare(text_corpus, cache)
    assert second.cache_hit is True
    assert second.stats == stats
    assert (second.dataset_dir, second.tokenizer_dir) == (first.dataset_dir, first.tokenizer_dir)
    # No temporary directories are left behind.
    assert [p.name for p in cache.iterdir() if not p.name.startswith("data-")] == []

    other = _prepare(text_corpus, cache, seq_len=48)
    assert other.cache_hit is False
    assert other.dataset_dir != first.dataset_dir
    assert other.stats["seq_len"] == 48
    assert len(list(cache.glob("data-*"))) == 2


def test_prepare_data_rejects_an_all_too_short_corpus(make_text_corpus, tmp_path):
    paths = make_text_corpus([f"line {i} is short" for i in range(50)], name="short")
    cache = tmp_path / "cache"
    with pytest.raises(ConfigError) as info:
        _prepare(paths, cache)
    message = str(info.value)
    assert message.startswith("data")
    assert "min_chars" in message
    assert "\n" not in message
    assert not list(cache.glob("data-*"))


def test_prepare_data_refuses_a_seq_len_longer_than_the_validation_split(
    make_text_corpus, pydoc_docs, tmp_path
):
    paths = make_text_corpus([d.text for d in pydoc_docs[:40]], name="small")
    with pytest.raises(ConfigError, match="trainer.seq_len"):
        _prepare(paths, tmp_path / "cache", seq_len=100_000)


def test_bad_records_are_counted_with_their_location_and_skipped(text_corpus, tmp_path):
    import glob
    import json

    good = sorted(glob.glob(text_corpus))
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    lines = [
        json.dumps({"text": "a good JSON line of text " * 4}),
        "[1, 2]",
        "{not json",
        json.dumps({"title": "no text"}),
    ]
    (bad_dir / "mixed.jsonl").write_bytes(
        ("\n".join(lines) + "\n").encode() + b'{"text": "\xff"}\n'
    )
    (bad_dir / "binary.txt").write_bytes(b"readable paragraph\n\n\x89PNG\xff\xfe\n")
    data = DataConfig(
        source="text-files", paths=[*good, str(bad_dir / "*")], validation_fraction=0.2
    )
    prepared = prepare_data(data, TokenizerConfig(vocab_size=400), 32, str(tmp_path / "c"))
    bad = prepared.stats["bad_records"]
    assert bad["by_reason"] == {
        "not a JSON object": 1,
        "invalid JSON": 1,
        "no string 'text'": 1,
        "invalid UTF-8": 2,
    }
    assert bad["first"]["not a JSON object"] == [f"{bad_dir / 'mixed.jsonl'}:2"]
    assert bad["first"]["invalid UTF-8"] == [
        f"{bad_dir / 'binary.txt'}:3",
        f"{bad_dir / 'mixed.jsonl'}:5",
    ]
    # Mostly bad input fails, with the counts, in one line.
    with pytest.raises(ConfigError, match=r"data.max_bad_fraction=0.05: 5 of \d+ input records"):
        strict = DataConfig(
            source="text-files", paths=[str(bad_dir / "*")], validation_fraction=0.2
        )
        prepare_data(strict, TokenizerConfig(vocab_size=400), 32, str(tmp_path / "c"))
