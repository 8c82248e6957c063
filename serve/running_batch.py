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

    def add(self, keys: list[Hashable], prompts: list[list[int]], params: list) -> list[Event]:
        """Prefill new rows and sample their first token; unfinished ones join the batch."""
        gen = self.gen
        rows = gen.start_rows(prompts, params)
        ids, mask = gen.left_pad(prompts)
        if any(p.prompt_logprobs is not None for p in params):
            # Scored by the same prefill that starts generation: every position's logits.
            logits, cache, every = gen.forward(ids, mask, None, every_position=True)
            for pos, (row, prompt) in enumerate(zip(rows, prompts)):
                k = row.params.prompt_logprobs
                if k is not None:
                    row.prompt_logprobs = prompt_logprobs(every[pos], prompt, k)
            del every
        else:
            logits, cache = gen.forward(ids, mask, None)
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
            logits, self.cache = gen.forward(self.next_ids, self.mask, self.cache)
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
        old.pad_left(width)
        new.pad_left(width)
        for mine, theirs in zip(old.cache.layers, new.cache.layers):
            mine.keys = torch.cat([mine.keys, theirs.keys])
            mine.values = torch.cat([mine.values, theirs.values])
        old.keys, old.rows = old.keys + new.keys, old.rows + new.rows
        old.next_ids = torch.cat([old.next_ids, new.next_ids])
        old.mask = torch.cat([old.mask, new.mask])
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

    def pad_left(self, width: int) -> None:
        extra = width - self.mask.shape[1]
        if extra:
            self.mask = F.pad(self.mask, (extra, 0))
            for layer in self.cache.layers:  # [rows, heads, seq, head_dim]: pad seq on the left
                layer.keys = F.pad(layer.keys, (0, 0, extra, 0))
                layer.values = F.pad(layer.values, (0, 0, extra, 0))


def _column(tokens: list[int], device) -> torch.Tensor:
    return torch.tensor(tokens, dtype=torch.long, device=device).unsqueeze(1)
