"""serve/api/request_checks.py, which needs no replica: payload shape and the status
each answer is counted under."""

from __future__ import annotations

import asyncio

import pytest

from serve.api.errors import APIError
from serve.api.request_checks import MAX_JSON_DEPTH, check_payload, counted


def _nested(levels: int) -> list:
    value: list = []
    for _ in range(levels - 1):
        value = [value]
    return value


def test_payload_depth_and_unicode_are_checked():
    check_payload({"prompt": "fine", "stop": ["a"], "user": _nested(MAX_JSON_DEPTH - 1)})
    with pytest.raises(APIError) as deep:
        check_payload({"user": _nested(MAX_JSON_DEPTH + 1)})
    assert deep.value.status == 400 and deep.value.param == "user"
    with pytest.raises(APIError) as surrogate:
        check_payload({"messages": [{"role": "user", "content": "a\ud800b"}]})
    assert surrogate.value.param == "messages" and "surrogate" in surrogate.value.message


def test_each_answer_is_counted_under_its_real_status():
    class Route:
        def __init__(self):
            self.seen = []

        def _count(self, route, status):
            self.seen.append((route, status))

        @counted("completions")
        async def answer(self, outcome):
            if isinstance(outcome, Exception):
                raise outcome
            return outcome

    route = Route()
    asyncio.run(route.answer("ok"))
    for error in (APIError(429, "busy"), APIError(404, "no model"), RuntimeError("bug")):
        with pytest.raises(type(error)):
            asyncio.run(route.answer(error))
    assert route.seen == [
        ("completions", 200),
        ("completions", 429),
        ("completions", 404),
        ("completions", 500),
    ]
