"""Progress: a rich bar on a terminal, plain lines every few seconds otherwise."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import IO, Any

__all__ = ["Display"]


class Display:
    """Shows items done of total (when known), the rate and the failures so far."""

    def __init__(
        self,
        title: str,
        total: int | None,
        *,
        stream: IO[str] | None = None,
        interval: float = 2.0,
        fancy: bool | None = None,
    ) -> None:
        self.title = title
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self._last = 0.0
        self._started = time.monotonic()
        self._progress: Any = None
        self._task: Any = None
        if fancy is None:
            fancy = self.stream.isatty()
        if fancy:
            try:
                from rich.console import Console
                from rich.progress import (
                    BarColumn,
                    MofNCompleteColumn,
                    Progress,
                    TextColumn,
                    TimeElapsedColumn,
                    TimeRemainingColumn,
                )
            except ImportError:  # the cli extra is not installed: plain lines
                fancy = False
            else:
                self._progress = Progress(
                    TextColumn("[bold]{task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]:>8} items/s"),
                    TextColumn("[red]{task.fields[failures]} not succeeded"),
                    TimeElapsedColumn(),
                    TimeRemainingColumn(),
                    console=Console(file=self.stream),
                    transient=False,
                )

    def __enter__(self) -> Display:
        if self._progress is not None:
            self._progress.start()
            self._task = self._progress.add_task(self.title, total=self.total, rate="0", failures=0)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, done: int, failures: int, *, final: bool = False) -> None:
        """New counts; cheap to call often (plain output is rate-limited)."""
        elapsed = max(1e-9, time.monotonic() - self._started)
        rate = done / elapsed
        if self._progress is not None:
            self._progress.update(
                self._task, completed=done, rate=f"{rate:,.0f}", failures=failures
            )
            return
        now = time.monotonic()
        if not final and now - self._last < self.interval:
            return
        self._last = now
        of = f"/{self.total:,}" if self.total else ""
        share = f" ({100 * done / self.total:.0f}%)" if self.total else ""
        print(
            f"{self.title}: {done:,}{of} items{share}, {rate:,.0f} items/s, "
            f"{failures:,} not succeeded",
            file=self.stream,
            flush=True,
        )
