"""Deduplication across the whole corpus, not per block or file: exact (the digest of the
cleaned text, exact.py) and near (MinHash LSH, minhash.py), both grouped by hash shuffle
(groups.py). Of each group of copies the first in corpus order stays."""
