"""LoRA adapters served beside one base export: which model id names which adapter, which
adapters a replica holds, and the forward call that applies each adapter to its rows only.

The adapters live in one peft ``PeftModel`` wrapped around the Generator's model (peft
injects its LoRA layers into that model in place). A forward pass over a mixed batch passes
peft one adapter name per row (``adapter_names``, "__base__" for a base row): each LoRA
layer, GPT-2's Conv1D included, adds each adapter's update to its own rows only.

Loading and unloading change the model's modules, so they run on the scheduler's decode
thread, between two decode rounds (``Scheduler.run_between_rounds``). No Ray and no HTTP
here: the API maps `AdapterNotFound` to 404 and `AdapterRefused` to 400.

Every replica of a deployment serves the same set: the configured adapters load at start
on each; the scanned folder is read on demand by each; and what POST /v1/load_lora_adapter
loads on one replica is published (``publish``; the deployment's is a Ray actor, see
serve/adapter_registry.py) and taken up by the others through ``sync`` (at their health
checks): they know the name at once then and load it on its first request, as from the
folder, and drop what was unloaded.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from rundir import layout
from schemas.serving import LoraServeConfig

BASE = "__base__"  # peft's adapter name for a row that takes no adapter

ALLOWED_ROOTS = "serve.lora.allowed_roots"


class AdapterNotFound(LookupError):
    """A model id that is neither the base nor an adapter this replica has or can find."""


class AdapterRefused(ValueError):
    """An adapter that cannot be loaded (or unloaded); the message names the cause."""

    def __init__(self, message: str, param: str = "lora_path") -> None:
        super().__init__(message)
        self.param = param


class Adapters:
    """The adapters of one replica, least recently used first."""

    def __init__(self, generator, config: LoraServeConfig, base_id: str) -> None:
        self.gen, self.config, self.base_id = generator, config, base_id
        self.roots = [os.path.realpath(r) for r in config.allowed_roots]
        self.paths: OrderedDict[str, str] = OrderedDict()  # name -> directory, LRU first
        self.pinned = set(config.adapters)  # loaded at start: never evicted
        # Names of adapters some waiting or running request uses (the scheduler's view).
        self.in_use: Callable[[], set] = set
        # Loaded at run time through the API, on this replica or another: name -> path.
        self.registered: dict[str, str] = {}
        # Tells the other replicas: (name, path) after a load, (name, None) after an unload.
        self.publish: Callable[[str, str | None], None] = lambda name, path: None
        for name, path in config.adapters.items():
            self.load(name, path, check_root=False)

    # ---- model ids ------------------------------------------------------------------------

    def ids(self) -> list[str]:
        return list(self.paths)

    def adapter_of(self, model: str | None) -> str | None:
        """The adapter a model id names: None for the base, the adapter's name for a loaded
        one or one in the scanned folder ("<base>:<adapter>" too); else AdapterNotFound."""
        if model is None or model == self.base_id:
            return None
        name = model
        if model.startswith(self.base_id + ":"):
            name = model[len(self.base_id) + 1 :]
        if name in self.paths or name in self.registered or self._scanned(name) is not None:
            return name
        available = ", ".join(repr(m) for m in [self.base_id, *self.paths])
        raise AdapterNotFound(f"model {model!r} does not exist; available: {available}")

    def knows(self, model: str | None) -> bool:
        try:
            self.adapter_of(model)
        except AdapterNotFound:
            return False
        return True

    def _scanned(self, name: str) -> str | None:
        folder = self.config.adapter_dir
        if not folder or not name or name in (".", "..") or os.sep in name or "/" in name:
            return None
        path = os.path.join(folder, name)
        return path if os.path.isfile(os.path.join(path, "adapter_config.json")) else None

    # ---- holding adapters (decode thread) ----------------------------------------------------

    def ensure(self, name: str) -> None:
        """``name`` loaded (from the scanned folder when it is not), and marked most recently
        used."""
        if name in self.paths:
            self.paths.move_to_end(name)
            return
        path = self.registered.get(name) or self._scanned(name)
        if path is None:
            raise AdapterNotFound(f"model {name!r} does not exist")
        self.load(name, path, check_root=False)

    def load_at_run_time(self, name: str, path: str) -> None:
        """POST /v1/load_lora_adapter: checked against the allowed roots, loaded, published."""
        if name in self.registered or self._scanned(name) is not None:
            raise AdapterRefused(f"an adapter named {name!r} is known already", "lora_name")
        self.load(name, path)
        self.registered[name] = self.paths[name]
        self.publish(name, self.paths[name])

    def unload_at_run_time(self, name: str) -> None:
        """POST /v1/unload_lora_adapter: unloaded here, and from the others through sync."""
        if name not in self.paths and name not in self.registered:
            raise AdapterNotFound(f"no adapter named {name!r} is loaded")
        if name in self.paths:
            self.unload(name)
        self.registered.pop(name, None)
        self.publish(name, None)

    def sync(self, registered: dict[str, str]) -> None:
        """Takes up the run-time set another replica published: new names become known
        (loaded on their first request), unloaded ones leave once no request uses them."""
        gone = set(self.registered) - set(registered)
        self.registered = dict(registered)
        busy = self.in_use()
        for name in gone & set(self.paths) - busy - self.pinned:
            self.unload(name)

    def load(self, name: str, path: str, check_root: bool = True) -> None:
        """Loads the peft adapter at ``path`` as ``name``, evicting the least recently used
        adapter no request uses when the replica holds serve.lora.max_loaded already."""
        if not name or "/" in name or ":" in name or name in (self.base_id, BASE):
            raise AdapterRefused(
                f"lora_name={name!r}: a name without '/' or ':' that is not the base's "
                f"{self.base_id!r}",
                "lora_name",
            )
        if name in self.paths:
            raise AdapterRefused(f"an adapter named {name!r} is loaded already", "lora_name")
        real = os.path.realpath(path)
        if check_root and not any(_under(real, root) for root in self.roots):
            raise AdapterRefused(
                f"lora_path {path!r} is outside {ALLOWED_ROOTS} ({', '.join(self.roots)})"
            )
        self._check_matches_base(real, path)
        if len(self.paths) >= self.config.max_loaded:
            self._evict_one()
        peft = self.gen.peft_model
        try:
            if peft is None:
                from peft import PeftModel

                self.gen.peft_model = PeftModel.from_pretrained(
                    self.gen.model, real, adapter_name=name
                ).eval()
            else:
                peft.load_adapter(real, adapter_name=name)
                if peft.active_adapter not in peft.peft_config:  # its last one was unloaded
                    peft.set_adapter(name)
        except Exception as e:  # shapes of another architecture, a broken file
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            if self.gen.peft_model is not None and name in self.gen.peft_model.peft_config:
                self.gen.peft_model.delete_adapter(name)
            raise AdapterRefused(
                f"lora_path {path!r} does not fit the base model: {first}"
            ) from None
        self.paths[name] = real

    def unload(self, name: str) -> None:
        if name not in self.paths:
            raise AdapterNotFound(f"no adapter named {name!r} is loaded")
        if name in self.in_use():
            raise AdapterRefused(
                f"adapter {name!r} is in use by running requests; retry when they finish",
                "lora_name",
            )
        self.gen.peft_model.delete_adapter(name)
        del self.paths[name]
        self.pinned.discard(name)

    def _evict_one(self) -> None:
        busy = self.in_use() | self.pinned
        victim = next((n for n in self.paths if n not in busy), None)
        if victim is None:
            raise AdapterRefused(
                f"serve.lora.max_loaded={self.config.max_loaded} adapters are loaded and all "
                "in use or configured; unload one first",
                "lora_name",
            )
        self.unload(victim)

    def _check_matches_base(self, real: str, path: str) -> None:
        """One line when the adapter was made for another base, architecture or vocabulary."""
        config_file = Path(real, "adapter_config.json")
        if not config_file.is_file():
            raise AdapterRefused(f"lora_path {path!r} is not a peft adapter directory")
        adapter = json.loads(config_file.read_text())
        if adapter.get("peft_type") != "LORA":
            raise AdapterRefused(
                f"lora_path {path!r} holds a {adapter.get('peft_type')} adapter; allowed: LORA"
            )
        ours = self.gen.model.config
        base = adapter.get("base_model_name_or_path")
        marker = Path(base, layout.EXPORT_MARKER) if base else None
        if marker is not None and marker.is_file():
            theirs = json.loads(marker.read_text())
            for key in ("model_type", "vocab_size", "hidden_size", "n_embd", "num_hidden_layers"):
                mine = getattr(ours, key, None)
                if key in theirs and mine is not None and theirs[key] != mine:
                    raise AdapterRefused(
                        f"lora_path {path!r} was trained on base {base!r} with {key}="
                        f"{theirs[key]!r}; this server's base has {key}={mine!r}"
                    )
        if Path(real, "tokenizer_config.json").is_file():
            from transformers import AutoTokenizer

            vocab = len(AutoTokenizer.from_pretrained(real))
            if vocab != len(self.gen.tokenizer):
                raise AdapterRefused(
                    f"lora_path {path!r} has a vocabulary of {vocab} tokens; this server's "
                    f"base has {len(self.gen.tokenizer)}"
                )


def peft_forward(generator, adapters: list[str | None] | None, rows: int) -> tuple:
    """The module a forward pass calls and its extra arguments: the peft model with one
    adapter name per row once any adapter was ever loaded (peft's LoRA layers would apply
    the active adapter to every row otherwise), the plain model before."""
    peft = getattr(generator, "peft_model", None)
    if peft is None or not peft.peft_config:  # no adapter loaded: LoRA layers add nothing
        return generator.model, {}
    names = adapters if adapters is not None else [None] * rows
    return peft, {"adapter_names": [a or BASE for a in names]}


def _under(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:  # different drives
        return False
