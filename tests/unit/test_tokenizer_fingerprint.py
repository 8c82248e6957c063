"""The evaluation text's cache key: what a tokenizer directory tokenizes, not where it lies."""

from __future__ import annotations

from dataprep.tokens.chat import ensure_chat_template
from dataprep.tokens.fingerprint import tokenizer_fingerprint
from dataprep.tokens.tokenizer import train_bpe_tokenizer


def test_a_fine_tunes_chat_template_and_weights_do_not_change_it(tiny_tokenizer, tmp_path):
    tiny_tokenizer.save_pretrained(tmp_path / "base")
    (tmp_path / "base" / "model.safetensors").write_bytes(b"base weights")
    tuned = tiny_tokenizer.__class__.from_pretrained(tmp_path / "base")
    assert ensure_chat_template(tuned)  # what fine-tuning adds
    tuned.save_pretrained(tmp_path / "tuned")
    (tmp_path / "tuned" / "model.safetensors").write_bytes(b"tuned weights")
    assert tokenizer_fingerprint(tmp_path / "base") == tokenizer_fingerprint(tmp_path / "tuned")


def test_another_vocabulary_or_no_tokenizer_is_not_the_same(tiny_tokenizer, pydoc_docs, tmp_path):
    tiny_tokenizer.save_pretrained(tmp_path / "a")
    texts = [d.text for d in pydoc_docs]
    other = train_bpe_tokenizer(texts, vocab_size=300, min_frequency=2, length=len(texts))
    other.save_pretrained(tmp_path / "b")
    assert tokenizer_fingerprint(tmp_path / "a") != tokenizer_fingerprint(tmp_path / "b")
    (tmp_path / "empty").mkdir()
    assert tokenizer_fingerprint(tmp_path / "empty") is None
    assert tokenizer_fingerprint("gpt2") is None  # a Hub name: keyed by its name
