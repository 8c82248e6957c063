"""Every corpus filter on hand-made documents: PII masks, each quality rule, exact and near
duplicates (a few words changed; distinct documents sharing boilerplate), decontamination
against evaluation items, and the counts the data report is made of."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from dataprep.corpus import Document
from dataprep.filtering.corpus_filter import CorpusFilter
from dataprep.filtering.decontam import EvalOverlap
from dataprep.filtering.near_dup import NearDuplicates, exact_jaccard
from dataprep.filtering.pii import mask_pii
from dataprep.filtering.quality import quality_failure
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


def test_near_duplicates_differing_by_a_few_words_go_and_distinct_documents_stay():
    near = NearDuplicates(DedupConfig())
    originals = [prose(100 + i, 200) for i in range(40)]
    for i, text in enumerate(originals):
        assert not near.is_duplicate(f"o{i}", f"orig{i}", text)
    caught = 0
    for i, text in enumerate(originals):
        words = text.split()
        for j in (17, 77, 140):  # three words changed
            words[j] = "CHANGED"
        edited = " ".join(words)
        assert exact_jaccard(text, edited, 5) > 0.85
        caught += near.is_duplicate(f"e{i}", f"edit{i}", edited)
    assert caught >= 0.9 * len(originals)
    assert near.pairs[0]["kept"] == "orig0" and near.pairs[0]["removed"] == "edit0"


def test_documents_sharing_boilerplate_are_not_near_duplicates():
    boilerplate = (
        "This file is part of the project and is distributed under the terms of the license "
        "that came with it. See the notice for details. "
    )
    near = NearDuplicates(DedupConfig())
    flags = [
        near.is_duplicate(str(i), str(i), boilerplate + prose(200 + i, 150)) for i in range(30)
    ]
    assert not any(flags)


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


def test_the_filter_chain_counts_every_step(tmp_path):
    items = tmp_path / "eval.txt"
    leaked = prose(300, 30)
    items.write_text(leaked + "\n")
    cfg = DataConfig(
        quality=QualityConfig(min_words=20),
        decontam=DecontamConfig(shipped=False, paths=[str(items)]),
    )
    base = prose(301, 200)
    near = base.split()
    near[50] = "CHANGED"
    docs = [
        Document("a.txt", base),
        Document("b.txt", base),  # exact duplicate of a
        Document("c.txt", " ".join(near)),  # one word changed
        Document("d.txt", "tiny"),  # shorter than min_chars
        Document("e.txt", "Few words, but long enough in characters to pass the min_chars bar."),
        Document("f.txt", prose(302) + " mail ann@example.com"),
        Document("g.txt", prose(303) + " " + leaked),
    ]
    chain = CorpusFilter(cfg)
    kept = list(chain.run(docs))
    assert [d.source for d in kept] == ["a.txt", "f.txt", "g.txt"]
    assert kept[1].text.endswith("mail <EMAIL>")
    train = chain.decontaminate(kept)
    chain.count_kept(train)
    assert [d.source for d in train] == ["a.txt", "f.txt"]
    assert chain.contaminated[0]["source"] == "g.txt"
    assert dict(chain.counts) == {
        "read": 7,
        "dropped_duplicate": 1,
        "dropped_near_duplicate": 1,
        "dropped_short": 1,
        "dropped_quality_too_few_words": 1,
        "pii_email": 1,
        "dropped_contaminated": 1,
        "kept": 2,
    }
