"""What a tokenizer directory tokenizes, as a short hash: held-out text tokenized once serves
every export that tokenizes the same way (a base and its fine-tunes), instead of being
curated and tokenized again for each export path."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

# The files of a Hugging Face tokenizer (fast or slow, BPE or SentencePiece). An export
# directory also holds the weights and model config, which tokenization never reads.
TOKENIZER_FILES = ("tokenizer", "special_tokens_map", "added_tokens", "vocab", "merges", "spiece")
# tokenizer_config.json keys that say how it was loaded or how chats render, not how text
# tokenizes: a tokenizer loaded from a folder and saved again gains "is_local".
NOT_TOKENIZATION = ("chat_template", "is_local", "local_files_only", "name_or_path")


def tokenizer_fingerprint(directory: str | Path) -> str | None:
    """16 hex digits over the directory's tokenizer files, the chat template and loading
    details left out (plain text never goes through a template; fine-tuning adds one);
    None when ``directory`` is not a local folder holding a tokenizer (a Hub name is keyed
    by its name instead)."""
    folder = Path(directory)
    files = (
        sorted(p for p in folder.glob("*") if p.is_file() and p.name.startswith(TOKENIZER_FILES))
        if folder.is_dir()
        else []
    )
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        content = path.read_bytes()
        if path.name == "tokenizer_config.json":
            config = json.loads(content)
            for key in NOT_TOKENIZATION:
                config.pop(key, None)
            content = json.dumps(config, sort_keys=True).encode()
        digest.update(path.name.encode() + b"\0" + content + b"\0")
    return digest.hexdigest()[:16]
