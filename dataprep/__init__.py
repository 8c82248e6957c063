"""Offline data work, laid out by pipeline step as datatrove is:

readers/     one reader per source (pydoc, text files, JSONL, Parquet, `datasets`, the
             embedded pairs), serial or on Ray with the same per-file functions
formatters/  text changed in place: cleaning, PII masking
filters/     each document's verdict, and why it is dropped
dedup/       exact and MinHash LSH deduplication across the corpus
tokens/      tokenizer training, tokenize + pack, chat examples as labelled rows
pipelines/   pretraining, SFT and preference data, each a short list of these stages
prepare.py   the three preparations and their cache keys; cache.py the cached directory
"""
