"""Every corpus filter on hand-made documents: PII masks, each quality rule, exact and near
duplicates (a few words changed; distinct documents sharing boilerplate), decontamination
against evaluation items, and the counts the data report is made of."""

from __future__ import annotations

import json
import random
from collections import Counter

import pyarrow as pa
import pytest

from dataprep.dedup.groups import group_edges
from dataprep.dedup.minhash import (
    band_buckets,
    band_rows,
    exact_jaccard,
    removed_by_links,
    signature,
    similarity,
)
from dataprep.filters.decontam import EvalOverlap
from dataprep.filters.documents import filter_documents
from dataprep.filters.quality import quality_failure
from dataprep.formatters.pii import mask_pii
from dataprep.pipelines.pretrain_report import summarize
from schemas.data import DataConfig
from schemas.filters import DecontamConfig, DedupConfig, QualityConfig

VOCAB = (
    "river stone light window garden paper silver morning letter bridge music forest "
    "winter table voice engine market island summer doctor planet candle marble harbor "
    "orange ladder pencil rocket castle velvet meadow thunder cactus lantern compass "
    "falcon glacier harvest kettle saddle tunnel violin walnut zephyr anchor blanket"
).split()


def prose(seed: int, words: int = 120) -> str:
    rng = random.Random(seed)
    sentences, count = [], 0
    while count < words:
        n = rng.randint(8, 14)
        sentences.append(" ".join(rng.choice(VOCAB) for _ in range(n)).capitalize() + ".")
        count += n
    return " ".join(sentences)


@pytest.mark.parametrize(
    "text,masked,kind",
    [
        ("write to jane.roe+lists@mail.example.org today", "write to <EMAIL> today", "email"),
        ("the host 10.0.12.7 answered", "the host <IP_ADDRESS> answered", "ip"),
        ("v6 at 2001:db8::8a2e:370:7334.", "v6 at <IP_ADDRESS>.", "ip"),
        ("call +44 20 7946 0958 now", "call <PHONE> now", "phone"),
        ("or (555) 123-4567, please", "or <PHONE>, please", "phone"),
    ],
)
def test_pii_is_masked_and_counted(text, masked, kind):
    counts = Counter()
    assert mask_pii(text, counts) == masked
    assert counts == {f"pii_{kind}": 1}


@pytest.mark.parametrize(
    "text",
    [
        "Python 3.11.2 was released; see a[::2] and the address ::1.",
        "It took 12:30:45 hours, from 2024-01-15 to page 1000 2000.",
        "Four numbers 1.2.3.4.5 are not an address; 999.1.1.1 is not either.",
    ],
)
def test_what_only_looks_like_pii_stays(text):
    counts = Counter()
    assert mask_pii(text, counts) == text and not counts


RULES = QualityConfig()


@pytest.mark.parametrize(
    "text,rule",
    [
        ("Too short to be a document at all.", "too_few_words"),
        ("a b c d e f g " * 20, "short_mean_word_length"),
        (" ".join(["incomprehensibilities"] * 30 + ["x"] * 30), "long_mean_word_length"),
        (prose(1) + " # # # # # # # # # # # # # # # # #", "symbol_word_ratio"),
        ("\n".join([prose(2, 60)] + ["Click here to subscribe now."] * 4), "duplicate_lines"),
        (
            "\n".join([prose(3, 40)] + [f"And then {w} went on..." for w in VOCAB[:8]]),
            "ellipsis_lines",
        ),
        (prose(4, 60) + " buy cheap watches" * 12, "repeated_top_ngram"),
        (prose(5, 60) + " " + " ".join([prose(6, 12)] * 3), "repeated_ngrams"),
    ],
)
def test_each_quality_rule_catches_its_kind_of_document(text, rule):
    assert quality_failure(text, RULES) == rule


def test_ordinary_prose_passes_and_a_null_switch_turns_a_rule_off():
    assert quality_failure(prose(7), RULES) is None
    short = "Too short to be a document at all."
    assert quality_failure(short, QualityConfig(min_words=None)) is None


def near_duplicates_in_process(texts: list[str], cfg: DedupConfig) -> dict[str, str]:
    """dataprep/dedup/minhash.py's near_duplicates without Ray: the pipeline's own band rows,
    grouped as one shuffle partition by its own Arrow grouping, candidates checked on their
    signatures, linked groups reduced to their first document."""
    keys = [f"{i:05d}" for i in range(len(texts))]
    batch = pa.table({"key": keys, "drop": [""] * len(keys), "text": texts})
    args = (cfg.threshold, cfg.num_perm, cfg.bands, cfg.shingle_words)
    rows = band_rows(batch, *args, skip=set(), partitions=1)
    edges = group_edges(rows, ["bucket"]).to_pylist()
    sigs = {k: signature(t, cfg.num_perm, cfg.shingle_words) for k, t in zip(keys, texts)}
    pairs = [(e["first"], e["other"]) for e in edges]
    return removed_by_links(
        [(a, b) for a, b in pairs if similarity(sigs[a], sigs[b]) >= cfg.threshold]
    )


def test_band_buckets_differ_by_band_for_equal_values():
    """Bands hashed with their number: the same values in two bands are two buckets."""
    sig = signature(prose(7), 128, 5)
    sig[9:18] = sig[0:9]  # bands 0 and 1 (9 rows each at the default split) now equal
    buckets = band_buckets(sig, 0.8, 128, None)
    assert len(buckets) == 14 and len(set(buckets)) == 14
    assert all(0 <= b < 2**64 for b in buckets)


def test_near_duplicates_differing_by_a_few_words_go_and_distinct_documents_stay():
    originals = [prose(100 + i, 200) for i in range(40)]
    edited = []
    for text in originals:
        words = text.split()
        for j in (17, 77, 140):  # three words changed
            words[j] = "CHANGED"
        edited.append(" ".join(words))
        assert exact_jaccard(text, edited[-1], 5) > 0.85
    removed = near_duplicates_in_process(originals + edited, DedupConfig())
    # Each edited copy (keys 00040..00079) goes to its original (00000..00039); no original goes.
    assert all(int(k) >= 40 for k in removed)
    assert all(int(removed[k]) == int(k) - 40 for k in removed)
    assert len(removed) >= 0.9 * len(originals)


def test_documents_sharing_boilerplate_are_not_near_duplicates():
    boilerplate = (
        "This file is part of the project and is distributed under the terms of the license "
        "that came with it. See the notice for details. "
    )
    texts = [boilerplate + prose(200 + i, 150) for i in range(30)]
    assert near_duplicates_in_process(texts, DedupConfig()) == {}


def test_linked_groups_keep_their_first_document():
    assert removed_by_links([("b", "c"), ("a", "b"), ("x", "y")]) == {"b": "a", "c": "a", "y": "x"}


def test_decontamination_finds_a_13_gram_and_a_whole_short_item(tmp_path):
    items = tmp_path / "eval.jsonl"
    items.write_text(
        '{"question": "What does the castle do when the harbor lights go dark at the '
        'end of the long winter?", "answer": "It rings the old bell."}\n'
        '{"question": "Which violin played the river song in the morning?"}\n'
    )
    overlap = EvalOverlap(DecontamConfig(shipped=False, paths=[str(items)]))
    assert overlap.items == 2  # the four-word answer is too short to count
    leak = "Notes. What does the castle do, when the harbor lights go dark at the end of it?"
    assert overlap.match(leak) == (
        "eval.jsonl:1",
        "what does the castle do when the harbor lights go dark at the",
    )
    assert overlap.match("Which violin played the river song in the morning") is not None
    assert overlap.match(prose(9)) is None
    assert overlap.match("It rings the old bell.") is None


def test_the_filter_stage_marks_every_document(tmp_path):
    items = tmp_path / "eval.txt"
    leaked = prose(300, 30)
    items.write_text(leaked + "\n")
    cfg = DataConfig(quality=QualityConfig(min_words=20), validation_fraction=0.2)
    overlap = EvalOverlap(DecontamConfig(shipped=False, paths=[str(items)]))
    docs = [
        ("a.txt", prose(301, 200)),
        ("d.txt", "tiny"),  # shorter than min_chars
        ("e.txt", "Few words, but long enough in characters to pass the min_chars bar."),
        ("f.txt", prose(302) + " mail ann@example.com"),
        ("g.txt", prose(303) + " " + leaked),
        ("h.txt", "   \x00\x01  \n\n "),  # empty once cleaned
    ]
    table = pa.table(
        {
            "key": [f"{i:03d}" for i in range(len(docs))],
            "source": [d[0] for d in docs],
            "text": [d[1] for d in docs],
            "bad": [""] * len(docs),
            "where": [""] * len(docs),
        }
    )
    rows = filter_documents(table, cfg, overlap).to_pylist()
    by_source = {r["source"]: r for r in rows}
    assert {s: r["drop"] for s, r in by_source.items()} == {
        "a.txt": "",
        "d.txt": "short",
        "e.txt": "quality_too_few_words",
        "f.txt": "",
        "g.txt": "contaminated",  # a training source (validation is not decontaminated)
        "h.txt": "empty",
    }
    assert [by_source[s]["split"] for s in ("e.txt", "g.txt")] == ["validation", "train"]
    assert by_source["f.txt"]["text"].endswith("mail <EMAIL>")
    assert by_source["f.txt"]["pii_email"] == 1
    assert by_source["d.txt"]["text"] == "" and by_source["a.txt"]["digest"]
    summary = json.loads(
        summarize(filter_documents(table, cfg, overlap)).column("summary")[0].as_py()
    )
    assert sum(summary["drops"].values()) == len(docs)
    assert summary["pii"]["email"] == 1


def reference_fractions(words: list[str], n: int) -> tuple[float, float]:
    """The repetition rules' two fractions straight from their definitions (Python tuples)."""
    total = sum(len(w) for w in words)
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    counts = Counter(grams)
    gram, top = counts.most_common(1)[0]
    covered = [False] * len(words)
    for i, g in enumerate(grams):
        if counts[g] > 1:
            covered[i : i + n] = [True] * n
    top_fraction = sum(map(len, gram)) * top / total if top > 1 else 0.0
    return top_fraction, sum(len(w) for w, c in zip(words, covered) if c) / total


@pytest.mark.parametrize("seed", range(20))
def test_vectorised_repetition_fractions_equal_their_definitions(seed):
    from dataprep.filters.quality import _duplicate_fraction, _NGrams, _top_fraction

    rng = random.Random(seed)
    words = [rng.choice(VOCAB[: rng.randint(2, 12)]) for _ in range(rng.randint(10, 80))]
    grams = _NGrams(words)
    for n in range(2, 11):
        occurs = grams.advance()
        expected = reference_fractions(words, n)
        assert (_top_fraction(grams, occurs), _duplicate_fraction(grams, occurs)) == pytest.approx(
            expected
        )
