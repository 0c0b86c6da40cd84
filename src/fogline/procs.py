"""Facts about processes on this machine, read from /proc."""

from __future__ import annotations


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
