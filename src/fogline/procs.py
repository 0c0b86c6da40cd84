"""Facts about processes on this machine, read from /proc."""

from __future__ import annotations

import os


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process in MB (None when it is gone or not on this machine)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def descendants(pid: int) -> list[int]:
    """The process's children, theirs, and so on (a sandboxed model is a few levels down)."""
    found: list[int] = []
    try:
        tasks = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                children = [int(c) for c in f.read().split()]
        except OSError:
            continue
        for child in children:
            found.append(child)
            found.extend(descendants(child))
    return found


def tree_rss_mb(pid: int) -> float | None:
    """Resident memory of a process and all its descendants, in MB."""
    own = rss_mb(pid)
    if own is None:
        return None
    return round(own + sum(rss_mb(child) or 0.0 for child in descendants(pid)), 1)
