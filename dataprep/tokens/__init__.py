"""Tokens: the tokenizer (trained on a sample or pretrained, tokenizer.py), the encoder Ray
tasks use (encoder.py), tokenize + pack for pretraining (pack.py), chat examples as labelled
rows for fine-tuning (chat.py)."""
