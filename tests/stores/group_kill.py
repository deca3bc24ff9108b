"""What the group-commit tests of both stores share: threads to append to, an event, and
the SIGKILL test's writer process (group_writer.py) with the acknowledgements it printed."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import IO

from threadline.events import Thread, ToolResult, UserMessage, utcnow
from threadline.stores import Store, new_thread_id

WRITER = Path(__file__).with_name("group_writer.py")


async def make_threads(store: Store, n: int) -> list[Thread]:
    """`n` new threads in `store`, each holding one user message (next seq 1)."""
    out = []
    for _ in range(n):
        thread = Thread(new_thread_id(), "g")
        thread.append(UserMessage(seq=0, at=utcnow(), text="go"))
        await store.create(thread)
        out.append(thread)
    return out


def event(seq: int) -> ToolResult:
    return ToolResult(seq=seq, at=utcnow(), call_id=f"c{seq}", tool="w", result=seq)


class KilledWriter:
    """group_writer.py appending to `threads` threads of the store at `url`, to be killed.

    Used as a context manager: entered once the writer is ready; on leaving, a writer still
    running is killed. `lines` holds what it printed so far.
    """

    def __init__(self, url: str, threads: int = 64, *, slow: bool = False) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(WRITER), url, str(threads), *(["slow"] if slow else [])],
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.lines: list[str] = []

    def __enter__(self) -> KilledWriter:
        try:
            assert self._stdout().readline().strip() == "ready"
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop()

    def read_acks(self, count: int) -> None:
        """Read on until `count` acknowledgements were printed in all."""
        while self.acks() < count:
            line = self._stdout().readline()
            assert line, "the writer died before the kill"
            self.lines.append(line)

    def read_random_acks(self, seed: int) -> None:
        """Read on to a number of acknowledgements drawn from `seed` (300 to 900): with 64
        threads appending, commits are in flight nearly all the time."""
        self.read_acks(random.Random(seed).randrange(300, 900))

    def kill(self) -> None:
        """SIGKILL the writer, then read the acknowledgements it printed before dying."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.lines.extend(self._stdout().read().splitlines())

    def acks(self) -> int:
        return sum(line.startswith("ack ") for line in self.lines)

    def behind(self) -> int:
        """Groups whose `COMMIT` went behind the loop, as last printed (`slow`)."""
        counts = [int(line.split()[1]) for line in self.lines if line.startswith("behind ")]
        return counts[-1] if counts else 0

    def acknowledged(self) -> tuple[dict[str, int], tuple[int, int, int]]:
        """Each thread's last acknowledged seq, and the last `stats` line (what the appends
        cost, appends, grouped appends); fails if no append was grouped (nothing tested)
        or grouping saved nothing."""
        acked: dict[str, int] = {}
        stats = None
        for line in self.lines:
            parts = line.split()
            if len(parts) == 3 and parts[0] == "ack":
                acked[parts[1]] = max(acked.get(parts[1], 0), int(parts[2]))
            elif len(parts) == 4 and parts[0] == "stats":
                stats = (int(parts[1]), int(parts[2]), int(parts[3]))
        assert stats is not None and stats[2] > 0, "no append was grouped: nothing was tested"
        assert stats[0] < stats[1], stats
        return acked, stats

    def _stdout(self) -> IO[str]:
        assert self.proc.stdout is not None
        return self.proc.stdout

    def _stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
