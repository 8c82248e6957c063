"""Shared, small, real fixtures for both tiers. Nothing here starts Ray."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from dataprep.readers.documents import Document, pydoc_corpus
from dataprep.tokens.tokenizer import train_bpe_tokenizer

REPO_ROOT = Path(__file__).resolve().parent.parent
TINY_VOCAB = 400
# Nothing is downloaded in tests: with no network, `datasets` (also inside Ray Data's
# from_huggingface) would retry the Hub for a minute before reading a local folder. Every
# process the tests start, Ray's workers included, inherits this.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Ray Train's controller looks at its workers every 2 s, so a run's end (and each restart)
# is noticed up to 2 s late; the tests run about 25 short runs. Polling more often changes
# when the end is seen, not what the run does.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
# The tests' clusters run on this one machine: nothing is preempted, and Ray Train's preemption
# watcher, an actor per run that only names preemption as a failure's cause, took 3-4 s of
# each tiny run (three alternating pairs of 2-step runs: 23-29 s with it, 19-21.5 s without).
# Users keep it: in the default `make train` the same switch moved nothing beyond the noise.
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")


def pytest_collection_modifyitems(items):
    # `gpu` tests run where CUDA is; on CPU machines they are skipped, and say so.
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if gpu_items:
        import torch

        if not torch.cuda.is_available():
            for item in gpu_items:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


@pytest.fixture(scope="session")
def pydoc_docs() -> list[Document]:
    """The first ~300 documents of the embedded corpus: 79 pydoc topics, then docstrings."""
    return list(itertools.islice(pydoc_corpus(), 300))


@pytest.fixture(scope="session")
def tiny_tokenizer(pydoc_docs):
    """A byte-level BPE with a 400-token vocabulary trained on ``pydoc_docs``."""
    texts = [d.text for d in pydoc_docs]
    return train_bpe_tokenizer(texts, vocab_size=TINY_VOCAB, min_frequency=2, length=len(texts))


def _write_text_corpus(directory: Path, texts: list[str], n_files: int) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        (directory / f"part-{i:02d}.txt").write_text(
            "\n\n".join(texts[i::n_files]) + "\n", encoding="utf-8"
        )
    return str(directory / "*.txt")


@pytest.fixture
def make_text_corpus(tmp_path):
    """``make(texts, n_files=6, name="corpus")`` spreads ``texts`` over .txt files (blank-line
    separated paragraphs) under tmp_path and returns their glob."""

    def make(texts: list[str], n_files: int = 6, name: str = "corpus") -> str:
        return _write_text_corpus(tmp_path / name, texts, n_files)

    return make


@pytest.fixture
def text_corpus(make_text_corpus, pydoc_docs) -> str:
    """A small text-files corpus (6 .txt files of real English) in tmp_path; its glob."""
    return make_text_corpus([d.text for d in pydoc_docs[:160]])


def save_tiny_gpt2(tokenizer, out: Path, positions: int = 64) -> Path:
    """A randomly initialised (seed 0) 2-layer GPT-2 saved as a flat Hugging Face export, the
    layout `make train` writes (safetensors, config, generation config, tokenizer)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    ids = dict(
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = GPT2Config(
        n_embd=32, n_layer=2, n_head=2, n_positions=positions, vocab_size=len(tokenizer), **ids
    )
    model = GPT2LMHeadModel(config)
    model.generation_config.update(**ids)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def make_tiny_export(tiny_tokenizer):
    """``make(directory, positions=64)``: the tiny GPT-2 export, with that many positions."""
    return lambda out, positions=64: save_tiny_gpt2(tiny_tokenizer, out, positions)


@pytest.fixture(scope="session")
def tiny_export(make_tiny_export, tmp_path_factory) -> Path:
    """The tiny GPT-2 export with 64 positions, shared by the whole session."""
    return make_tiny_export(tmp_path_factory.mktemp("export") / "tiny-gpt2")


@pytest.fixture(scope="session")
def tokenizer_copy():
    """``copy(tokenizer, directory)``: a saved and reloaded copy, free to change."""
    return copy_tokenizer


def copy_tokenizer(tokenizer, directory):
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(directory)
    return AutoTokenizer.from_pretrained(directory)


@pytest.fixture(scope="session")
def chat_tokenizer(tiny_tokenizer, tmp_path_factory):
    """The tiny BPE with the default chat template (a copy: the session fixture stays)."""
    from dataprep.tokens.chat import ensure_chat_template

    tokenizer = copy_tokenizer(tiny_tokenizer, tmp_path_factory.mktemp("chat-tok"))
    assert ensure_chat_template(tokenizer) is True
    return tokenizer


@pytest.fixture(scope="session")
def tiny_model(chat_tokenizer):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    eos = chat_tokenizer.eos_token_id
    config = GPT2Config(
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=128,
        vocab_size=len(chat_tokenizer),
        bos_token_id=eos,
        eos_token_id=eos,
    )
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on loopback with a bucket (tests/helpers/s3_server.py), started once
    per session by the first test that asks; reached through ``s3_server.env``."""
    from helpers.s3_server import running_s3_server

    with running_s3_server() as server:
        yield server


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """This test's process reaches ``s3_server`` the standard way (AWS_* variables)."""
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    return s3_server
