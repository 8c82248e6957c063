"""Readers: one per source kind (pydoc.py, text.py, jsonl.py, parquet.py, hf.py, stdlib_qa.py,
embedded/ for the translation and summarization sets),
gathered into pretraining documents (documents.py) or fine-tuning records (records.py, with
chat_formats.py for their formats), read in this process or on Ray (ray_datasets.py) with the
same per-file functions. A record that cannot be read is counted, never fatal alone."""
