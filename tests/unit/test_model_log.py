"""A model's log read as `fogline model logs` reads it: the tail from the end, bounded, across
the move to model.log.1, and followed as it grows."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fogline.models.model_log import follow_lines, previous_of, size_of, tail_lines


def write_lines(path: Path, first: int, count: int) -> None:
    with open(path, "a") as f:
        f.writelines(f"line {i}\n" for i in range(first, first + count))


def test_the_tail_is_the_last_lines_and_reads_only_the_end(tmp_path: Path) -> None:
    log = tmp_path / "model.log"
    write_lines(log, 0, 200_000)  # about 2.3 MB
    assert tail_lines(log, 3) == ["line 199997", "line 199998", "line 199999"]
    # Asked for more than the budget holds: what the last bytes hold, every line whole.
    few = tail_lines(log, 100_000, max_bytes=1000)
    assert 0 < len(few) < 100 and few[-1] == "line 199999"
    assert all(line.startswith("line ") for line in few)
    assert int(few[0].split()[1]) == 200_000 - len(few)
    assert tail_lines(log, 0) == []


def test_the_tail_continues_into_the_moved_away_part(tmp_path: Path) -> None:
    log = tmp_path / "model.log"
    write_lines(previous_of(log), 0, 10)
    write_lines(log, 10, 2)
    assert tail_lines(log, 4) == ["line 8", "line 9", "line 10", "line 11"]


def test_the_tail_ends_where_asked_and_a_missing_log_is_empty(tmp_path: Path) -> None:
    log = tmp_path / "model.log"
    assert tail_lines(log, 5) == []
    write_lines(log, 0, 5)
    end = size_of(log)
    write_lines(log, 5, 5)
    assert tail_lines(log, 2, end=end) == ["line 3", "line 4"]


async def test_following_gives_each_new_line_and_follows_a_moved_log(tmp_path: Path) -> None:
    log = tmp_path / "model.log"
    write_lines(log, 0, 3)
    following = follow_lines(log, size_of(log), poll_s=0.01)
    write_lines(log, 3, 2)
    got = [await asyncio.wait_for(anext(following), 5) for _ in range(2)]
    assert got == ["line 3", "line 4"]
    # Full: the log moves to .1 and starts again; the follower reads the new one from its start.
    log.rename(previous_of(log))
    write_lines(log, 5, 1)
    assert await asyncio.wait_for(anext(following), 5) == "line 5"
    # A line written in two parts comes out once, whole.
    with open(log, "a") as f:
        f.write("half")
        f.flush()
        next_line = asyncio.ensure_future(anext(following))
        await asyncio.sleep(0.05)
        assert not next_line.done()
        f.write(" and half\n")
    assert await asyncio.wait_for(next_line, 5) == "half and half"
    await following.aclose()
