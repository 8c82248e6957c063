"""Filters decide whether a document stays and say why it does not: length, quality rules
(quality.py), overlap with evaluation items (decontam.py); documents.py is the filter stage
that runs them, with the formatters, on each batch."""
