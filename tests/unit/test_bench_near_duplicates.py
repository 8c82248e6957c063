"""Near-duplicate scoring of the data benchmarks, one function for zeroray and datatrove: a
planted pair counts as found whichever of its two documents a pipeline removed."""

from bench.data_bench import near_duplicate_scores

MANIFEST = {
    "documents": 104,  # 100 distinct, 2 exact copies, 2 near copies
    "planted_exact": 2,
    "planted_near": ["0000002:000000000", "0000003:000000000"],
    "near_originals": ["0000001:000000007", "0000002:000000009"],
}


def test_either_document_of_a_pair_is_a_find():
    zeroray = {"0000002:000000000", "0000003:000000000"}  # the copies: later in corpus order
    datatrove = {"0000002:000000000", "0000002:000000009"}  # one copy, one original
    for removed in (zeroray, datatrove):
        assert near_duplicate_scores(MANIFEST, removed) == {
            "recall": 1.0,
            "false_removal_share": 0.0,
        }


def test_misses_and_false_removals():
    removed = {"0000003:000000000", "0000000:000000004"}  # one pair missed; a distinct one
    assert near_duplicate_scores(MANIFEST, removed) == {
        "recall": 0.5,
        "false_removal_share": 1 / 100,
    }
    both = {"0000002:000000000", "0000001:000000007"}  # a whole pair gone: one too many
    assert near_duplicate_scores(MANIFEST, both)["false_removal_share"] == 1 / 100
