"""Data path: cleaning, the embedded corpus, splitting, tokenizer, packing, cached preparation."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from tokenizers import pre_tokenizers
from transformers import AutoTokenizer

from dataprep.filters.documents import filter_documents, split_by_document
from dataprep.formatters.clean import clean_text
from dataprep.readers.documents import Document
from dataprep.tokens.pack import tokenize_and_pack
from dataprep.tokens.tokenizer import EOS_TOKEN, PAD_TOKEN
from schemas.data import DataConfig
from schemas.filters import DecontamConfig, QualityConfig

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
    """Every filter but cleaning and min_chars switched off."""
    no_rules = {f.name: None for f in dataclasses.fields(QualityConfig)}
    return DataConfig(
        min_chars=min_chars,
        pii=False,
        quality=QualityConfig(**no_rules),
        decontam=DecontamConfig(enabled=False),
    )


def marked(docs: list[Document], cfg: DataConfig) -> list[dict]:
    """The pipeline's filter stage on ``docs``, in one batch, without Ray."""
    table = pa.table(
        {
            "key": [f"{i:05d}" for i in range(len(docs))],
            "source": [d.source for d in docs],
            "text": [d.text for d in docs],
            "bad": [""] * len(docs),
            "where": [""] * len(docs),
        }
    )
    return filter_documents(table, cfg, None).to_pylist()


def test_cleaning_marks_every_outcome_and_equal_texts_share_a_digest():
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
    rows = marked(docs, cleaning_only(min_chars=40))
    assert [r["drop"] for r in rows] == ["", "empty", "short", "", "", "empty", "", ""]
    assert rows[0]["text"] == long + "one"
    # The deduplication stage groups by digest: equal once cleaned, equal digests.
    assert rows[0]["digest"] == rows[4]["digest"] and rows[6]["digest"] == rows[7]["digest"]
    assert len({rows[i]["digest"] for i in (0, 3, 6)}) == 3


def test_min_chars_zero_keeps_short_text():
    [row] = marked([Document("s", "hi")], cleaning_only(min_chars=0))
    assert row["drop"] == "" and row["text"] == "hi"


# --- the embedded corpus --------------------------------------------------------------------------

CORPUS_PROBE = """
import json, sys
from dataprep.readers.documents import pydoc_corpus
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


NESTED_DEFINITIONS = """
\"\"\"Module.\"\"\"
if True:
    def in_if():
        \"\"\"In an if.\"\"\"
try:
    class InTry:
        \"\"\"In a try.\"\"\"
        def method(self):
            \"\"\"A method.\"\"\"
            def inner():
                \"\"\"Nested in a method.\"\"\"
except ImportError:
    def in_handler():
        \"\"\"In an except clause.\"\"\"
finally:
    pass
match value:
    case 1:
        async def in_case():
            \"\"\"In a match case.\"\"\"
with context() as c:
    f = lambda: (yield)
    def in_with():
        \"\"\"In a with block.\"\"\"
"""


def test_definitions_are_found_in_ast_walks_order_without_visiting_expressions():
    import ast

    from dataprep.readers.pydoc import _DOC_NODES, documented_nodes

    tree = ast.parse(NESTED_DEFINITIONS)
    walked = [node for node in ast.walk(tree) if isinstance(node, _DOC_NODES)]
    assert len(walked) == 8
    assert list(documented_nodes(tree)) == walked  # the corpus's order, hence its bytes


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


def _split(docs: list[Document], fraction: float) -> tuple[list[dict], list[dict]]:
    rows = marked(docs, DataConfig(validation_fraction=fraction, **_plain()))
    return [r for r in rows if r["split"] == "train"], [r for r in rows if r["split"] != "train"]


def _plain() -> dict:
    plain = cleaning_only(min_chars=0)
    return {"min_chars": 0, "pii": False, "quality": plain.quality, "decontam": plain.decontam}


def test_split_is_deterministic():
    docs = _many_source_docs()
    assert _split(docs, 0.2) == _split(list(docs), 0.2)


def test_split_never_puts_one_source_on_both_sides():
    docs = _many_source_docs()
    train, val = _split(docs, 0.2)
    assert train and val
    assert len(train) + len(val) == len(docs)
    train_sources = {d["source"] for d in train}
    val_sources = {d["source"] for d in val}
    assert not train_sources & val_sources
    assert 0.05 < len(val_sources) / 60 < 0.45  # roughly the requested share of sources


def test_split_of_a_single_source_still_holds_out_documents():
    docs = [Document("one.txt", f"paragraph {i}") for i in range(40)]
    rows = pa.Table.from_pylist(marked(docs, DataConfig(validation_fraction=0.1, **_plain())))
    assert set(rows.column("split").to_pylist()) == {"train"}  # by source: one side only
    split = split_by_document(rows, 0.1).column("split").to_pylist()
    assert "train" in split and "validation" in split and len(split) == 40


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


def _packed(texts: list[str], tokenizer, seq_len: int, tmp_path) -> list[list[int]]:
    """The pipeline's packing stage over map batches of PACK_BATCH documents."""
    tokenizer.save_pretrained(tmp_path / "tok")
    rows = []
    for start in range(0, len(texts), PACK_BATCH):
        batch = pa.table({"text": texts[start : start + PACK_BATCH]})
        out = tokenize_and_pack(batch, str(tmp_path / "tok"), seq_len)
        assert out.column_names == ["input_ids"]
        rows += out.column("input_ids").to_pylist()
    return rows


def test_tokenize_and_pack(tiny_tokenizer, pack_texts, tmp_path):
    seq_len = 64
    eos = tiny_tokenizer.eos_token_id
    rows = _packed(pack_texts, tiny_tokenizer, seq_len, tmp_path)
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


def test_pack_drops_a_corpus_shorter_than_one_row(tiny_tokenizer, tmp_path):
    assert _packed(["tiny"], tiny_tokenizer, 64, tmp_path) == []


def test_a_batch_without_documents_of_a_split_packs_into_no_rows(tiny_tokenizer, tmp_path):
    tiny_tokenizer.save_pretrained(tmp_path / "tok")
    rows = marked([Document("a", "A document long enough to be kept. " * 4)], cleaning_only(0))
    batch = pa.Table.from_pylist(rows)
    assert rows[0]["split"] == "train"
    out = tokenize_and_pack(batch, str(tmp_path / "tok"), 8, split="validation")
    assert out.num_rows == 0 and out.column_names == ["input_ids"]
    assert tokenize_and_pack(batch, str(tmp_path / "tok"), 8, split="train").num_rows > 0
