"""Formatters change a document's text and keep it: cleaning (clean.py) and PII masking
(pii.py), each counting what it did for the data report."""
