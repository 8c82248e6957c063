"""Records a reader skips: counted by reason with the first few locations of each
(``file:line``), so that bad input costs a line in the stats instead of a stack trace, and a
run fails with the counts only when too much of its input is bad."""

from __future__ import annotations

from collections import Counter, defaultdict

from schemas.fields import ConfigError


class BadRecords:
    """Skipped records counted by reason, with the first few locations of each."""

    SHOW = 5

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.where: dict[str, list[str]] = defaultdict(list)
        self.seen = 0

    def add(self, reason: str, where: str) -> None:
        self.counts[reason] += 1
        if len(self.where[reason]) < self.SHOW:
            self.where[reason].append(where)

    def summary(self) -> dict:
        return {
            "records": self.seen,
            "bad": sum(self.counts.values()),
            "by_reason": dict(self.counts),
            "first": dict(self.where),
        }

    def describe(self) -> str:
        parts = [f"{n} {r} (first at {', '.join(self.where[r])})" for r, n in self.counts.items()]
        return "; ".join(parts) or "none"

    def check(self, max_fraction: float, split: str, key: str = "sft.max_bad_fraction") -> None:
        bad = sum(self.counts.values())
        if self.seen and bad / self.seen > max_fraction:
            raise ConfigError(
                f"{key}={max_fraction}: {bad} of {self.seen} {split} records "
                f"are bad: {self.describe()}; allowed: fix the data or raise the fraction"
            )
