"""Reading hostile files in bounded memory: lines and paragraphs of at most ``max_bytes``
read in chunks (a 200 MB line is skipped a chunk at a time and reported as None, never held
whole), and JSON whose nesting is too deep to parse safely recognised before parsing (a
line of 100,000 ``[`` would raise RecursionError inside ``json.loads``; nested just under
Python's limit, it would raise it later, in a Ray task's deeper stack, when dumped again)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

CHUNK_BYTES = 1 << 20
# Chat records nest about 5 deep (messages -> turn -> content parts); 64 leaves room for any
# real record and stays far below Python's recursion limit in any stack.
MAX_JSON_DEPTH = 64
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


class TooDeep(ValueError):
    """A JSON value nested deeper than MAX_JSON_DEPTH."""


def bounded_lines(f: BinaryIO, max_bytes: int) -> Iterator[bytes | None]:
    """Each line of ``f`` with its newline, or None for a line of more than ``max_bytes``
    (newline not counted), whose bytes are skipped without being held."""
    while line := f.readline(max_bytes + 1):
        if len(line) <= max_bytes or line.endswith(b"\n"):
            yield line
            continue
        while (rest := f.readline(CHUNK_BYTES)) and not rest.endswith(b"\n"):
            pass
        yield None


def bounded_paragraphs(f: BinaryIO, max_bytes: int) -> Iterator[tuple[int, bytes | None]]:
    """(first line number, bytes) of each blank-line separated paragraph of ``f`` with
    newlines made universal, as ``raw.split(b"\\n\\n")`` would give them (the last piece too,
    even empty), or (line, None) for one of more than ``max_bytes``, skipped in chunks."""
    buf, line, start, skipped_lines, too_large = b"", 1, 0, 0, False
    for chunk in _universal_newlines(f):
        buf += chunk
        while (end := buf.find(b"\n\n", start)) >= 0:
            block, buf, start = buf[:end], buf[end + 2 :], 0
            big = too_large or len(block) > max_bytes
            yield line, None if big else block
            line += skipped_lines + block.count(b"\n") + 2
            skipped_lines, too_large = 0, False
        if len(buf) - buf.endswith(b"\n") > max_bytes:
            # Over the cap with no end in sight (a last "\n" may start the separator): keep
            # only that last byte, counting the newlines dropped for the next location.
            skipped_lines += buf[:-1].count(b"\n")
            buf, too_large = buf[-1:], True
        start = max(0, len(buf) - 1)
    yield line, None if too_large or len(buf) > max_bytes else buf


def _universal_newlines(f: BinaryIO) -> Iterator[bytes]:
    """``f`` in chunks with \\r\\n and \\r turned into \\n (a \\r ending a chunk waits for the
    next one, which may start with its \\n)."""
    held = b""
    while chunk := f.read(CHUNK_BYTES):
        chunk = held + chunk
        held = b"\r" if chunk.endswith(b"\r") else b""
        chunk = chunk[:-1] if held else chunk
        yield chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if held:
        yield b"\n"


def load_json(raw: bytes) -> object:
    """``json.loads`` of UTF-8 bytes; TooDeep for nesting over MAX_JSON_DEPTH (checked
    first, only on lines with that many brackets at all: the count is cheap, the check is
    not). UnicodeDecodeError and ValueError as ``json.loads`` raises them."""
    text = raw.decode("utf-8")
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and _depth(raw) > MAX_JSON_DEPTH:
        raise TooDeep(f"nested more than {MAX_JSON_DEPTH} deep")
    try:
        return json.loads(text)
    except RecursionError as e:  # a backstop: the depth check should have caught it
        raise TooDeep(str(e)) from None


def _depth(raw: bytes) -> int:
    """The deepest nesting of brackets outside JSON strings."""
    codes = np.frombuffer(_STRING.sub(b'""', raw), dtype=np.uint8)
    steps = np.isin(codes, (ord("["), ord("{"))).astype(np.int32)
    steps -= np.isin(codes, (ord("]"), ord("}")))
    return int(np.cumsum(steps).max(initial=0))
