"""What a replica has accepted and not finished, counted by what it costs: prompts (a
request with k prompts takes k slots), tokens (prompt + max_tokens of each) and scored
tokens (the prompt tokens whose log-probabilities are computed: echo with logprobs). Past a
limit a request is refused with 429 and Retry-After before anything is queued; one that
alone is over the scoring budget could never run, and gets 400.

Every admitted prompt gets a release callback; the scheduler calls it when the prompt's job
ends, however it ends, so no client behaviour can leak a slot. Releasing twice is harmless.
"""

from __future__ import annotations

from collections.abc import Callable

from serve.api.errors import APIError


class Admission:
    def __init__(
        self,
        max_prompts: int,
        max_tokens: int,
        retry_after_s: int,
        on_change: Callable[[int], None] | None = None,
        max_scored_tokens: int | None = None,
    ) -> None:
        self.max_prompts, self.max_tokens = max_prompts, max_tokens
        self.max_scored_tokens = max_scored_tokens  # None: not counted
        self.retry_after_s = retry_after_s
        self.on_change = on_change  # gets the in-flight prompt count after every change
        self.prompts = 0
        self.tokens = 0
        self.scored = 0

    def admit(self, costs: list[int], scored: list[int] | None = None) -> list[Callable[[], None]]:
        """One release callback per prompt, each of ``costs[i]`` tokens and ``scored[i]``
        scored prompt tokens; or 429 (400 for a request over the scoring budget alone)."""
        scored = scored or [0] * len(costs)
        self._check_scored(sum(scored))
        if self.prompts + len(costs) > self.max_prompts:
            self._refuse(
                f"{self.prompts} prompts in flight on this replica, this request adds "
                f"{len(costs)} (limit {self.max_prompts})"
            )
        if self.tokens + sum(costs) > self.max_tokens:
            self._refuse(
                f"{self.tokens} tokens (prompt + max_tokens) in flight on this replica, this "
                f"request adds {sum(costs)} (limit {self.max_tokens})"
            )
        self.prompts += len(costs)
        self.tokens += sum(costs)
        self.scored += sum(scored)
        self._changed()
        return [self._release_once(cost, n) for cost, n in zip(costs, scored)]

    def _check_scored(self, adds: int) -> None:
        limit = self.max_scored_tokens
        if limit is None or not adds:
            return
        if adds > limit:
            raise APIError(
                400,
                f"scoring this request's prompts takes {adds} tokens of log-probabilities; "
                f"this replica scores at most {limit} at once (serve.max_scored_tokens)",
                "logprobs",
                "scored_tokens_exceeded",
            )
        if self.scored + adds > limit:
            self._refuse(
                f"{self.scored} prompt tokens being scored on this replica, this request adds "
                f"{adds} (limit {limit})"
            )

    def _release_once(self, cost: int, scored: int = 0) -> Callable[[], None]:
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.prompts -= 1
                self.tokens -= cost
                self.scored -= scored
                self._changed()

        return release

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self.prompts)

    def _refuse(self, why: str) -> None:
        raise APIError(
            429,
            f"server busy: {why}; retry later",
            code="queue_full",
            headers={"Retry-After": str(self.retry_after_s)},
        )
