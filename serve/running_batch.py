"""Continuous batching: rows that decode together one token per step, which new requests
join between steps instead of waiting for the whole batch to finish.

A joining group is prefilled on its own, then its KV cache and attention mask are
left-padded to the running batch's width (or the batch's to theirs) and stacked under it.
Positions come from the mask (generator.py), so the padding changes no row's result: a row
decodes the same tokens whether it ran alone, in a static batch, or joined mid-flight.
The model work is the Generator's public batch primitives; this class owns only the batch's
tensors. No Ray here: the scheduler (scheduler.py) drives it from its decode loop.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicLayer

from serve.logprobs import prompt_logprobs, step_logprobs

# (the caller's key of a row, its Delta for this step, or the exception that ended it alone)
Event = tuple[Hashable, object]


class RunningBatch:
    def __init__(self, generator) -> None:
        self.gen = generator
        self.keys: list[Hashable] = []  # caller's key per batch position
        self.rows: list = []  # generator.Row per batch position
        self.next_ids: torch.Tensor | None = None  # [rows, 1]: the token each row feeds next
        self.mask: torch.Tensor | None = None  # [rows, cache width + 1]
        self.cache = None

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def can_join(self) -> bool:
        """Plain per-layer KV tensors can be padded and stacked; other cache kinds (sliding
        windows, say) cannot, and then new rows wait for the batch to empty."""
        return self.cache is None or all(type(layer) is DynamicLayer for layer in self.cache.layers)

    def add(
        self, keys: list[Hashable], prompts: list[list[int]], params: list, adapters=None
    ) -> list[Event]:
        """Prefill new rows and sample their first token; unfinished ones join the batch.
        ``adapters``: each new row's LoRA adapter (serve/adapters.py); None = the base."""
        gen = self.gen
        rows = gen.start_rows(prompts, params, adapters)
        ids, mask = gen.left_pad(prompts)
        if any(p.prompt_logprobs is not None for p in params):
            # Scored by the same prefill that starts generation, off its hidden states.
            logits, cache, hidden = _forward(gen, ids, mask, None, rows, every_position=True)
            for pos, (row, prompt) in enumerate(zip(rows, prompts)):
                if row.params.prompt_logprobs is not None:
                    _score(gen, row, hidden[pos], prompt)
            del hidden
        else:
            logits, cache = _forward(gen, ids, mask, None, rows)
        tokens = gen.sample(rows, logits)
        logprobs = step_logprobs(logits, tokens, [r.params.logprobs for r in rows])
        events = gen.advance(keys, rows, tokens, logprobs)
        next_ids = _column(tokens, ids.device)
        mask = torch.cat([mask, torch.ones_like(next_ids)], dim=1)
        group = _Group(list(keys), rows, next_ids, mask, cache)
        group.keep([p for p, r in enumerate(rows) if r.finish_reason is None])
        if group.rows:
            self._join(group)
        return events

    def step(self, cancelled: Callable[[Hashable], bool] | None = None) -> list[Event]:
        """One token for every running row; cancelled rows leave first, at no cost."""
        gen, events = self.gen, []
        if cancelled is not None:
            for key, row in zip(self.keys, self.rows):
                if cancelled(key):
                    events.append((key, gen.cancel(row)))
            self._keep_unfinished()
        if self.rows:
            logits, self.cache = _forward(gen, self.next_ids, self.mask, self.cache, self.rows)
            tokens = gen.sample(self.rows, logits)
            logprobs = step_logprobs(logits, tokens, [r.params.logprobs for r in self.rows])
            events += gen.advance(self.keys, self.rows, tokens, logprobs)
            self.next_ids = _column(tokens, self.mask.device)
            self.mask = torch.cat([self.mask, torch.ones_like(self.next_ids)], dim=1)
            self._keep_unfinished()
        return events

    # ---- batch bookkeeping -------------------------------------------------------------

    def _as_group(self) -> _Group:
        return _Group(self.keys, self.rows, self.next_ids, self.mask, self.cache)

    def _adopt(self, group: _Group) -> None:
        self.keys, self.rows = group.keys, group.rows
        self.next_ids, self.mask, self.cache = group.next_ids, group.mask, group.cache

    def _keep_unfinished(self) -> None:
        group = self._as_group()
        group.keep([p for p, r in enumerate(self.rows) if r.finish_reason is None])
        self._adopt(group)

    def _join(self, new: _Group) -> None:
        if not self.rows:
            self._adopt(new)
            return
        old = self._as_group()
        width = max(old.mask.shape[1], new.mask.shape[1])
        # Everything is built before anything is assigned: should an allocation fail here
        # (memory), the running batch is left as it was and decodes on; only the joining
        # rows fail (serve/scheduler.py).
        old_padded, new_padded = old.padded_left(width), new.padded_left(width)
        stacked = [
            (torch.cat([a_k, b_k]), torch.cat([a_v, b_v]))
            for (a_k, a_v), (b_k, b_v) in zip(old_padded.kv, new_padded.kv)
        ]
        next_ids = torch.cat([old.next_ids, new.next_ids])
        mask = torch.cat([old_padded.mask, new_padded.mask])
        for layer, (keys, values) in zip(old.cache.layers, stacked):
            layer.keys, layer.values = keys, values
        old.keys, old.rows = old.keys + new.keys, old.rows + new.rows
        old.next_ids, old.mask = next_ids, mask
        self._adopt(old)


class _Group:
    """Rows with aligned tensors: the running batch, or a freshly prefilled group."""

    def __init__(self, keys, rows, next_ids, mask, cache) -> None:
        self.keys, self.rows = keys, rows
        self.next_ids, self.cache = next_ids, cache
        self.mask = mask  # covers the cached positions plus the token fed next

    def keep(self, positions: list[int]) -> None:
        if len(positions) == len(self.rows):
            return
        if not positions:
            self.keys, self.rows, self.next_ids, self.mask, self.cache = [], [], None, None, None
            return
        index = torch.tensor(positions, dtype=torch.long, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.keys = [self.keys[p] for p in positions]
        self.rows = [self.rows[p] for p in positions]
        self.next_ids, self.mask = self.next_ids[index], self.mask[index]
        # Columns no remaining row attends to (left padding of rows that left) are dropped.
        first = int(self.mask.any(dim=0).nonzero()[0])
        if first:
            self.mask = self.mask[:, first:]
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]

    def padded_left(self, width: int) -> _Padded:
        """The mask and per-layer KV left-padded to ``width``, as new tensors (the group's
        own are left as they are)."""
        extra = width - self.mask.shape[1]
        # [rows, heads, seq, head_dim]: pad seq on the left.
        kv = [
            (F.pad(layer.keys, (0, 0, extra, 0)), F.pad(layer.values, (0, 0, extra, 0)))
            if extra
            else (layer.keys, layer.values)
            for layer in self.cache.layers
        ]
        return _Padded(F.pad(self.mask, (extra, 0)) if extra else self.mask, kv)


class _Padded(NamedTuple):
    mask: torch.Tensor
    kv: list[tuple[torch.Tensor, torch.Tensor]]


def _score(gen, row, hidden: torch.Tensor, prompt: list[int]) -> None:
    """A row's prompt log-probabilities; a failure (memory, say) ends that row alone."""
    # The output embedding, as the model's own forward applies it to the positions it keeps.
    to_logits = gen.model.get_output_embeddings()
    try:
        with torch.inference_mode():
            k = row.params.prompt_logprobs
            vocab = to_logits.weight.shape[0]
            row.prompt_logprobs = prompt_logprobs(hidden, prompt, k, to_logits, vocab)
    except Exception as e:
        row.error = e


def _forward(gen, ids, mask, cache, rows, every_position: bool = False):
    """The generator's forward pass, with each row's LoRA adapter when any row has one (a
    batch of base rows is called as before adapters existed)."""
    adapters = [row.adapter for row in rows]
    extra = {"adapters": adapters} if any(adapters) else {}
    if every_position:
        return gen.forward(ids, mask, cache, every_position=True, **extra)
    return gen.forward(ids, mask, cache, **extra)


def _column(tokens: list[int], device) -> torch.Tensor:
    return torch.tensor(tokens, dtype=torch.long, device=device).unsqueeze(1)
