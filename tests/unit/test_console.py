"""The one logger: every line prefixed, to the sys.stdout current when it is logged."""

from __future__ import annotations

import contextlib
import io

from console import log


def test_every_line_is_prefixed_and_goes_to_the_current_stdout():
    with contextlib.redirect_stdout(io.StringIO()) as out:
        log.info("data: %s documents", 3)
        log.info("serving x\nOpenAI base URL: y")
    assert out.getvalue() == (
        "[zeroray] data: 3 documents\n[zeroray] serving x\n[zeroray] OpenAI base URL: y\n"
    )


def test_it_does_not_depend_on_the_root_logger():
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # as Ray Train workers set it (WARNING), and more
    try:
        with contextlib.redirect_stdout(io.StringIO()) as out:
            log.info("still shown")
    finally:
        root.setLevel(level)
    assert out.getvalue() == "[zeroray] still shown\n"
