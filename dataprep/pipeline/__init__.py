"""Pretraining data preparation as a Ray Data pipeline on whatever cluster the job runs on:
read -> clean and filter -> deduplicate across the corpus -> decontaminate -> train the
tokenizer on a bounded sample -> tokenize and pack -> Parquet shards. The driver holds no
documents: only counts, the keys of duplicates, and the tokenizer's sample as it streams."""
