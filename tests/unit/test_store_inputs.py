"""A pretraining corpus in an object store (`data.paths=[s3://...]`), against moto's S3 server
on loopback: globs listed as a local glob matches, the cache key stamped from the objects,
each file read by the same reader a task runs, from a temporary copy."""

from __future__ import annotations

import pytest

from dataprep.readers.documents import corpus_items, input_fingerprint, item_rows
from dataprep.readers.files import expand_globs
from rundir.store import open_location
from schemas.data import DataConfig
from schemas.fields import ConfigError

TEXTS = {
    "corpus/a/one.txt": "First paragraph of one.\n\nSecond paragraph of one.\n",
    "corpus/a/deep/two.txt": "Only paragraph of two.\n",
    "corpus/b/three.jsonl": '{"text": "A record."}\n{"text": 5}\n',
    "corpus/b/skip.md": "not read",
}


@pytest.fixture
def corpus(s3_env):
    for name, text in TEXTS.items():
        open_location(s3_env.uri(name)).write_bytes(text.encode())
    return s3_env.uri("corpus")


def test_globs_in_a_store_match_as_local_globs_do(corpus):
    assert expand_globs([f"{corpus}/*/*.txt"], uris=True) == [f"{corpus}/a/one.txt"]
    assert expand_globs([f"{corpus}/**/*.txt"], uris=True) == [
        f"{corpus}/a/deep/two.txt",
        f"{corpus}/a/one.txt",
    ]
    assert expand_globs([f"{corpus}/b/three.jsonl"], uris=True) == [f"{corpus}/b/three.jsonl"]
    with pytest.raises(ConfigError, match=r"matches no file"):
        expand_globs([f"{corpus}/**/*.parquet"], uris=True)
    with pytest.raises(ConfigError, match="mixes local paths and URIs"):
        expand_globs([f"{corpus}/*/*.txt", "/tmp/*.txt"], uris=True)
    with pytest.raises(ConfigError, match="is a URI; allowed: local paths"):
        expand_globs([f"{corpus}/*/*.txt"], "sft.paths")  # readers that take no URI


def test_a_corpus_in_a_store_is_keyed_and_read_like_a_local_one(corpus):
    cfg = DataConfig(source="text-files", paths=[f"{corpus}/**/*.txt", f"{corpus}/b/*.jsonl"])
    items = corpus_items(cfg)
    assert [i["source"] for i in items] == ["a/deep/two.txt", "a/one.txt", "b/three.jsonl"]
    stamps = input_fingerprint(cfg)
    assert [s[0] for s in stamps] == [i["path"] for i in items]
    assert stamps[1][1] == len(TEXTS["corpus/a/one.txt"]) and stamps[1][2] > 0
    rows = [row for item in items for row in item_rows(item, "text")]
    assert [r["text"].strip() for r in rows if r["text"]] == [
        "Only paragraph of two.",
        "First paragraph of one.",
        "Second paragraph of one.",
        "A record.",
    ]
    assert [(r["bad"], r["where"]) for r in rows if r["bad"]] == [
        ("no string 'text'", f"{corpus}/b/three.jsonl:2")  # the object, not its local copy
    ]
    open_location(items[1]["path"]).write_bytes(b"Changed.\n")  # a new object: a new key
    assert input_fingerprint(cfg) != stamps
