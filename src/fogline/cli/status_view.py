"""`fogline status` for a person: a line per part of the platform, then the disk, the history's
retention and the tenant's ingest counters. (`--json` prints the API's answers as they are.)

Pure functions of the API's answers, so that what a person reads is tested without a platform.
"""

from __future__ import annotations

from typing import Any

from fogline.domain.timeseries import iso_from_ms

# The parts /ready checks, in the order they are shown; a part it adds later follows them.
PARTS = ("broker", "database", "historian", "models", "disk")
MIB = 1024**2


def status_lines(
    ready: dict[str, Any], system: dict[str, Any], ingest: dict[str, Any], tenant: str
) -> list[str]:
    """What `fogline status` prints on stdout (what is wrong goes to stderr as well)."""
    checks: dict[str, Any] = ready.get("checks") or {}
    lines = [_readiness(ready)]
    names = [p for p in PARTS if p in checks] + [p for p in checks if p not in PARTS]
    width = max((len(n) for n in names), default=0)
    lines += [_part_line(name, checks[name], width) for name in names]
    if (disk := checks.get("disk")) is not None:
        lines.append(disk_line(disk))
    if (retention := system.get("retention")) is not None:
        lines.append(retention_line(retention))
    if listeners := system.get("listeners"):
        lines.append(listeners_line(listeners))
    lines.append(_ingest_line(ingest, tenant))
    if (security := system.get("security")) is not None:
        lines.append(security_line(security))
    return lines


def _readiness(ready: dict[str, Any]) -> str:
    if ready.get("status") == "ready":
        warnings = ready.get("warnings") or []
        return "ready" + (f" ({len(warnings)} warning(s))" if warnings else "")
    return f"NOT READY: {ready.get('detail') or 'the platform does not say why'}"


def _part_line(name: str, check: dict[str, Any], width: int) -> str:
    state = "ok" if check.get("ok") else "PROBLEM"
    facts = _facts(name, check)
    line = f"{name:<{width}}  {state:<7}  {facts}".rstrip()
    if check.get("problem"):
        line += f"; {check['problem']}"
    return line


def _facts(name: str, check: dict[str, Any]) -> str:
    """A part's state in a few words: what an operator looks at first."""
    if name == "broker":
        if not check.get("embedded"):
            return "connected" if check.get("connected") else "not connected"
        return (
            f"{check.get('state', 'unknown')}, pid {check.get('pid')}, "
            f"{check.get('restarts', 0)} restart(s)"
        )
    if name == "database":
        return str(check.get("dialect", ""))
    if name == "historian":
        age = check.get("last_commit_age_s")
        committed = "no commit yet" if age is None else f"last commit {age:.0f}s ago"
        return (
            f"{check.get('state', 'unknown')}, backlog {check.get('backlog', 0)}, {committed}, "
            f"{check.get('restarts', 0)} restart(s)"
        )
    if name == "models":
        return f"{check.get('deployed', 0)} deployed"
    if name == "disk":
        return "refusing new data" if check.get("refusing") else "taking data"
    return ""


def listeners_line(listeners: list[dict[str, Any]]) -> str:
    """`listening  http 0.0.0.0:8470 (TLS), mqtt 0.0.0.0:18883 (TLS, client certificates)...`"""
    parts = []
    for entry in listeners:
        notes = ["TLS"] if entry.get("tls") else []
        if entry.get("client_certificates"):
            notes.append("client certificates")
        note = f" ({', '.join(notes)})" if notes else ""
        parts.append(f"{entry.get('name')} {entry.get('host')}:{entry.get('port')}{note}")
    return "listening  " + ", ".join(parts)


def time_left(days: float) -> str:
    """How long the headroom lasts, in the unit that says it: days, hours, or minutes."""
    hours = days * 24
    if days >= 1:
        return f"{days:.1f} days"
    if hours >= 1:
        whole = round(hours)
        return f"about {whole} hour{'s' if whole != 1 else ''}"
    minutes = round(hours * 60)
    if minutes < 1:
        return "under a minute"
    return f"about {minutes} minute{'s' if minutes != 1 else ''}"


def disk_line(disk: dict[str, Any]) -> str:
    """The data dir's disk in a line: the headroom above the reserve and how long it lasts."""
    days = disk.get("days_left")
    lasts = (
        f"{time_left(days)} left at the current rate"
        if days is not None
        else "not filling (or too early to tell)"
    )
    line = (
        f"disk: {disk['free_bytes'] / MIB:,.0f} MiB free of {disk['total_bytes'] / MIB:,.0f} MiB, "
        f"{disk['headroom_bytes'] / MIB:,.0f} MiB above the {disk['reserve_bytes'] / MIB:,.0f} "
        f"MiB reserve; {lasts}"
    )
    return line + ("; REFUSING NEW DATA" if disk.get("refusing") else "")


def retention_line(stats: dict[str, Any]) -> str:
    """The history's retention job in a line: an admin key sees it in /system."""
    oldest = stats.get("oldest_reading_ms")
    last = stats.get("last_run_at_ms")
    return (
        f"retention: {stats['readings_deleted']} readings deleted in {stats['runs']} run(s), "
        f"last run {iso_from_ms(last) if last else 'not yet'}, oldest reading kept "
        f"{iso_from_ms(oldest) if oldest else 'none'}"
        + (f", last error: {stats['last_error']}" if stats.get("last_error") else "")
    )


def _ingest_line(stats: dict[str, Any], tenant: str) -> str:
    if "messages" not in stats:
        return f"ingest ({tenant}): unavailable: {stats.get('detail', 'no answer')}"
    by_reason = stats.get("dead_letters_by_reason") or {}
    reasons = ", ".join(f"{r} {n}" for r, n in sorted(by_reason.items()))
    return (
        f"ingest ({tenant}): {stats['messages']} messages, {stats['values']} values, "
        f"{stats['dead_letters']} dead letters"
        + (f" ({reasons})" if reasons else "")
        + f", {len(stats.get('devices') or [])} device(s)"
    )


def security_line(summary: dict[str, Any]) -> str:
    """What nats-server refused, in a line: totals per kind, the devices with the most, and
    the user names that are no device's."""
    if summary.get("unavailable"):
        return "security: not known now (the database does not answer)"
    totals = summary.get("totals") or {}
    if not summary.get("total"):
        return "security: nothing refused"
    kinds = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in totals.items() if n)
    line = f"security: {kinds}"
    top = summary.get("top_devices") or []
    if top:
        line += "; most: " + ", ".join(f"{d['tenant']}/{d['device']} {d['total']}" for d in top[:3])
    unknown = summary.get("unknown_users_count") or 0
    if unknown:
        names = ", ".join(f"{u['username']!r} {u['total']}" for u in summary["unknown_users"][:3])
        line += f"; {unknown} unknown user name(s): {names}"
    return line
