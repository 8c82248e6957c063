"""Corpus filters run on cleaned documents before tokenization: PII masking, quality rules,
near-duplicate removal and decontamination; each counts what it did for the data report."""
