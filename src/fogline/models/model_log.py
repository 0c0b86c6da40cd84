"""Reading a model process's log (model.log, which moves to model.log.1 when full): its last
lines, read backwards from the end so a large log is never read whole, and the lines written
after them, for as long as the reader wants."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

MAX_TAIL_BYTES = 1024 * 1024  # what one tail reads at most, however many lines are asked
BLOCK = 64 * 1024
POLL_S = 0.5  # how often a follower looks for new lines


def previous_of(path: Path) -> Path:
    return path.with_name(path.name + ".1")


def tail_lines(
    path: Path, lines: int, max_bytes: int = MAX_TAIL_BYTES, end: int | None = None
) -> list[str]:
    """The last `lines` lines of the log before byte `end` (default: its end), from the
    moved-away part too when the current one is shorter, reading at most `max_bytes`."""
    found = _tail_of(path, lines, max_bytes, end)
    if len(found) < lines and previous_of(path).is_file():
        budget = max_bytes - sum(len(line) + 1 for line in found)
        if budget > 0:
            found = _tail_of(previous_of(path), lines - len(found), budget) + found
    return found


def _tail_of(path: Path, lines: int, max_bytes: int, end: int | None = None) -> list[str]:
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            end = size if end is None else min(end, size)
            start = end
            data = b""
            # Back block by block until there are enough line ends (or the budget is spent).
            while start > 0 and data.count(b"\n") <= lines and end - start < max_bytes:
                step = min(BLOCK, start, max_bytes - (end - start))
                start -= step
                f.seek(start)
                data = f.read(step) + data
    except FileNotFoundError:
        return []
    text = data.decode("utf-8", errors="replace")
    found = text.splitlines()
    if start > 0 and found:
        found = found[1:]  # the first one is cut: its start lies before what was read
    return found[-lines:] if lines else []


async def follow_lines(path: Path, offset: int, poll_s: float = POLL_S) -> AsyncIterator[str]:
    """Each line written to the log after byte `offset`; a log moved away (full) is followed
    into its new file from the start."""
    pending = b""
    while True:
        size = await asyncio.to_thread(size_of, path)
        if size < offset:  # moved to .1 and started again
            offset, pending = 0, b""
        if size > offset:
            chunk = await asyncio.to_thread(_read, path, offset, min(size - offset, BLOCK))
            offset += len(chunk)
            *complete, pending = (pending + chunk).split(b"\n")
            if len(pending) > BLOCK:  # a line without end: given out in pieces
                complete.append(pending)
                pending = b""
            for line in complete:
                yield line.decode("utf-8", errors="replace")
            if size > offset:
                continue  # more already there: no wait
        await asyncio.sleep(poll_s)


def size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _read(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)
