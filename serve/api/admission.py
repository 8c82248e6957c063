"""What a replica has accepted and not finished, counted by what it costs: prompts (a
request with k prompts takes k slots) and tokens (prompt + max_tokens of each). Past either
limit a request is refused with 429 and Retry-After before anything is queued.

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
    ) -> None:
        self.max_prompts, self.max_tokens = max_prompts, max_tokens
        self.retry_after_s = retry_after_s
        self.on_change = on_change  # gets the in-flight prompt count after every change
        self.prompts = 0
        self.tokens = 0

    def admit(self, costs: list[int]) -> list[Callable[[], None]]:
        """One release callback per prompt, each of ``costs[i]`` tokens; or 429."""
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
        self._changed()
        return [self._release_once(cost) for cost in costs]

    def _release_once(self, cost: int) -> Callable[[], None]:
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.prompts -= 1
                self.tokens -= cost
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
