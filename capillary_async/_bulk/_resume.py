"""A job's journal at work: what earlier runs finished, marks before sending, outcomes after.

The rules (``resume`` in ``_journal``): only a verdict on an item is final (a
success, the server's refusal of that very item, client-side validation).
Everything else is sent again on a rerun, except an item whose fate is unknown
and that is not safe to repeat (FIXED_DAYS / FIXED_MONTHS), which stays
``unknown`` unless ``retry_unknown`` is set. Items are marked in flight, and
committed, just before their request goes out; a failure to write the journal
stops the job, since a request it does not know of could be repeated.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncGenerator, AsyncIterable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from .._exceptions import JournalError, JournalIOError
from .._logs import get_logger
from ._files import InputFile, InputRow
from ._flow import Signal
from ._identity import item_digest, same_refs
from ._journal import Entry, Journal, Journalled, Resume, fingerprint, resume
from ._lock import JournalLock
from ._opening import open_locked
from ._options import BulkOptions
from ._outcomes import ItemOutcome, OutcomeStatus, Prepared
from ._specs import BulkSpec

if TYPE_CHECKING:
    from ._job import Job

__all__ = ["Resumer"]

logger = get_logger("journal")

ABORTED_IN_FLIGHT = (
    "sent, but the run was aborted before the answer came: it may have been applied "
    "(FIXED_DAYS / FIXED_MONTHS rows are resent only with retry_unknown)"
)
UNSAFE_RESEND = (
    "in flight when an earlier run stopped; not resent because FIXED_DAYS / FIXED_MONTHS "
    "is not idempotent (check the record, then rerun with retry_unknown to send it)"
)
#: States in which an earlier run may have applied an item.
_MAYBE_APPLIED = frozenset({"unknown", "in_flight"})
#: Verdicts by definition, whatever the engine's ``settled`` says.
_ALWAYS_SETTLED = frozenset({OutcomeStatus.SUCCEEDED, OutcomeStatus.INVALID})
SUCCEEDED = OutcomeStatus.SUCCEEDED
_STATUSES = {status.value: status for status in OutcomeStatus}
#: Outcomes queued for the journal before the job waits for them to be written.
_MAX_PENDING = 20_000


def _identity(kind: str, target: str) -> str:
    """What a journal of a non-file input is tied to: the endpoint and the target."""
    return hashlib.sha256(f"{kind}\0{target}\0items".encode(errors="surrogateescape")).hexdigest()


class Resumer:
    """The journal of one job run: the ``JobHooks`` of the engine, and the outcomes' recorder."""

    def __init__(
        self,
        options: BulkOptions,
        spec: BulkSpec[Any, Any],
        lock: JournalLock,
        journal: Journal | None,
    ) -> None:
        self.options = options
        self.spec = spec
        self.lock = lock
        self.journal = journal  # None: a dry run with no journal yet
        self.name = lock.name
        self.job: Job[Any, Any] | None = None
        self._states: AsyncGenerator[Journalled, None] | None = (
            journal.states() if journal is not None else None
        )
        self._state: Journalled | None = None
        #: Items are known by position only when the input is not a file: check each.
        self.check_refs = False
        #: Why the input is not the one the journal recorded, if it is not.
        self.mismatch: str | None = None
        self._started = False
        self._lines: dict[int, int] = {}
        #: What each held item of an input that is not a file holds: index -> digest.
        self._digests: dict[int, str | None] = {}
        self._maybe_applied_before: set[int] = set()
        self._pending: list[Entry] = []
        self._wake = Signal()
        self._saved = Signal()
        self._over = False
        self._mismatched = -1
        #: Marked in flight and without an outcome yet: index -> line.
        self._marked: dict[int, int] = {}
        #: Of those, the ones whose request went out (on_send returned).
        self._handed: set[int] = set()
        #: Why the journal failed, the first time it did.
        self.problem: str | None = None
        #: Whether the journal holds every outcome this run knows.
        self.complete = True

    @classmethod
    async def open(
        cls,
        options: BulkOptions,
        *,
        spec: BulkSpec[Any, Any],
        items: Iterable[Any] | AsyncIterable[Any],
        target: str,
    ) -> Resumer:
        """Lock and open the journal; ``JournalError`` (nothing sent) if it is not this job's."""
        path = Path(options.journal or "")
        kind = spec.kind
        if isinstance(items, InputFile):
            if items.path == "-":
                raise JournalError(
                    "a journal needs an input file: standard input cannot be resumed"
                )
            stamp = await anyio.to_thread.run_sync(fingerprint, kind, items.path, target)
            about = {"input": stamp, "shard": "all"}
            if items.shard is not None:  # shard 1/3's journal is not shard 2/3's
                about["shard"] = f"{items.shard[0]}/{items.shard[1]}"
                stamp = hashlib.sha256(f"{stamp}\0shard {items.shard}".encode()).hexdigest()
        else:
            stamp = _identity(kind, target)
            about = {}
        lock = JournalLock(path)
        lock.acquire()
        try:
            journal = await open_locked(lock, path, stamp, dry_run=options.dry_run, about=about)
        except BaseException:
            lock.release()
            raise
        resumer = cls(options, spec, lock, journal)
        resumer.check_refs = not isinstance(items, InputFile)
        return resumer

    def attach(self, job: Job[Any, Any]) -> None:
        """The job whose outcomes this records; its report reads its rows from the journal."""
        self.job = job
        columns = [c for c in self.spec.describe(None) if c != "line"]
        path, name = self.lock.path, self.name
        report = job.report

        def rows() -> Iterator[dict[str, Any]]:
            for f in Journal.read_failures(path, name):
                yield {
                    "index": f.index,
                    "line": f.line or None,
                    columns[0]: f.ref_id,
                    columns[1]: f.ref_type,
                    "status": f.state,
                    "error_code": f.error_code,
                    "error_message": f.error_message,
                    "request_id": f.request_id,
                }

        if self.journal is not None and not self.options.dry_run:
            report._journal_rows = rows
        report.journal = str(self.options.journal)

    # -- the engine's hooks -----------------------------------------------------------------

    def fresh(self, index: int, raw: Any) -> bool:
        """Whether ``before`` would have nothing to say of this item (its line is noted).

        True when the journal holds no row at or past ``index`` and no digest is
        kept: the reader then takes the item without awaiting ``before``.
        """
        if self.check_refs or (self._states is not None and not self._exhausted()):
            return False
        if type(raw) is InputRow:
            self._lines[index] = raw.line
        return True

    def _exhausted(self) -> bool:
        return self._started and self._state is None

    async def before(self, index: int, raw: Any) -> ItemOutcome | None:
        """What an earlier run finished: its outcome, from the journal; None to process the item."""
        state = await self._state_of(index)
        line = raw.line if isinstance(raw, InputRow) else None
        if state is None:
            if line is not None:
                self._lines[index] = line
            if self.check_refs:
                self._digests[index] = item_digest(self.spec, raw)
            return None
        data = raw.data if isinstance(raw, InputRow) else raw
        if self.check_refs:
            digest = self._digests[index] = item_digest(self.spec, data)
            if not same_refs(state.refs, self._refs(data)) or (
                state.digest is not None and digest is not None and state.digest != digest
            ):
                self._differs(index)
                return None  # the job is stopping: the item ends not attempted, unrecorded
        action = resume(
            state.state, state.settled, state.idempotent, retry_unknown=self.options.retry_unknown
        )
        if action is Resume.SEND:
            if state.state in _MAYBE_APPLIED:
                self._maybe_applied_before.add(index)
            if line is not None:
                self._lines[index] = line
            return None
        if action is Resume.UNKNOWN:
            if not self.options.dry_run:
                self._pending.append(
                    Entry(
                        index, line or 0, "unknown", *self._refs(data), error_message=UNSAFE_RESEND
                    )
                )
            return ItemOutcome(
                index,
                data,
                OutcomeStatus.UNKNOWN,
                None,
                None,
                UNSAFE_RESEND,
                None,
                False,
                line,
                True,
            )
        status = _STATUSES.get(state.state, OutcomeStatus.UNKNOWN)
        code = state.error_code if isinstance(state.error_code, int) else None
        return ItemOutcome(
            index,
            data,
            status,
            None,
            code,
            state.error_message,
            state.request_id,
            status is not OutcomeStatus.UNKNOWN,
            line,
            True,
        )

    async def on_send(self, entries: list[tuple[int, Any]]) -> None:
        """Commit the items of a chunk as in flight before it is sent; raising stops the send."""
        if self.problem is not None:
            raise JournalIOError(self.problem)
        if self.journal is None:
            raise JournalIOError(f"the {self.name} is not open")
        idempotent, lines, digests, refs = (
            self.spec.idempotent,
            self._lines,
            self._digests,
            self._refs,
        )
        rows = [
            (index, lines.get(index, 0), idempotent(item), *refs(item), digests.get(index))
            for index, item in entries
        ]
        indexes = [index for index, _ in entries]
        self._marked.update((row[0], row[1]) for row in rows)
        try:
            await self.journal.mark_in_flight(rows)
        except JournalIOError as exc:  # rolled back: the items are as they were
            for index in indexes:
                self._marked.pop(index, None)
            self._failed(exc)
            raise
        # The engine sends at once, with no wait between: from here they may reach the server.
        self._handed.update(indexes)

    async def on_unsent(self, entries: list[tuple[int, Any]]) -> None:
        """Rows marked in flight whose attempt was certainly not applied (a 429, a 503).

        Recorded ``not_attempted`` while they wait for their retry: killed then,
        a resume sends them as never sent, not as ``unknown``. A row an earlier
        run may have applied keeps its mark.
        """
        if self.journal is None or self.problem is not None:
            return
        rows = [index for index, _ in entries if index not in self._maybe_applied_before]
        for index in rows:
            self._marked.pop(index, None)
            self._handed.discard(index)
        try:
            await self.journal.unmark(rows)
        except JournalIOError as exc:
            self._failed(exc)

    # -- recording ----------------------------------------------------------------------------

    async def on_final(self, outcomes: Sequence[ItemOutcome]) -> None:
        """Every outcome of the job, as it is made final: queued for the journal at once.

        The queue is bounded: past ``_MAX_PENDING`` the job waits for the saver.
        """
        note = self._note
        for outcome in outcomes:
            note(outcome)
        self._wake.set()
        while len(self._pending) >= _MAX_PENDING and self.problem is None and not self._over:
            await self._saved.waiter().wait()

    async def saver(self) -> None:
        """Write queued outcomes while the job runs (a write batches what piled up meanwhile)."""
        while True:
            if self._pending and self.problem is None:
                await self._save()
                self._saved.set()
            elif self._over:
                return
            else:
                await self._wake.waiter().wait()

    def job_over(self) -> None:
        """The job has given out its last outcome: the saver writes what is left and ends."""
        self._over = True
        self._wake.set()

    def _differs(self, index: int) -> None:
        """The input is not the journal's: stop before anything of it is sent."""
        self.mismatch = (
            f"the {self.name} records another item at position {index} of the input (other "
            "refs, or the same refs with other content): it was made for other items, for "
            "these in another order, or for these before they were changed. A journal knows "
            "the items of a list or a generator by their position and content; rerun with "
            "the same items in the same order, or send changed items with a new journal"
        )
        self._mismatched = index
        if self.job is not None:
            self.job.stop(f"{self.mismatch}; nothing more was sent", drain=False)

    def _note(self, outcome: ItemOutcome) -> None:
        index = outcome.index
        if (
            outcome.status is SUCCEEDED
            and index in self._marked
            and self.mismatch is None
            and not self._maybe_applied_before
            and not outcome.resumed
        ):
            # The common row, in short: this run marked it and it succeeded.
            del self._marked[index]
            self._handed.discard(index)
            at = self._lines.pop(index, None) or outcome.line or 0
            digest = self._digests.pop(index, None) if self._digests else None
            self._pending.append(
                Entry(
                    index,
                    at,
                    "succeeded",
                    None,
                    None,
                    None,
                    None,
                    outcome.request_id,
                    True,
                    digest,
                    True,
                )
            )
            return
        if self.mismatch is not None and index == self._mismatched:
            return  # not this journal's item: its row stays as it was
        # A row this run marked holds its refs already (the record keeps them).
        was_marked = self._marked.pop(index, None) is not None
        self._handed.discard(index)
        line = self._lines.pop(index, None) or outcome.line or 0
        digest = self._digests.pop(index, None) if self._digests else None
        if outcome.resumed or self.options.dry_run:
            return  # as the journal has it (an unsafe resend is queued already)
        applied_before = index in self._maybe_applied_before
        self._maybe_applied_before.discard(index)
        if outcome.status is OutcomeStatus.NOT_ATTEMPTED and (
            self.problem is not None or applied_before
        ):
            # Not sent now: what the journal says of it (in flight, maybe
            # applied by an earlier run) is still right.
            return
        message = outcome.error_message
        if message and outcome.status is OutcomeStatus.INVALID and not message.startswith("line "):
            message = f"line {line}: {message}" if line else message
        ref_id, ref_type = (None, None) if was_marked else self._refs(outcome._item)
        self._pending.append(
            Entry(
                index,
                line,
                outcome.status.value,
                ref_id,
                ref_type,
                outcome.error_code,
                message,
                outcome.request_id,
                outcome.settled or outcome.status in _ALWAYS_SETTLED,
                digest,
                was_marked,
            )
        )

    async def _save(self, *, last: bool = False) -> None:
        if self.journal is None or self.options.dry_run:
            return  # a dry run writes nothing, not even counters
        if self.problem is not None and not last:
            return
        # Taken off the queue only once written: a cancelled write leaves them for close().
        entries = list(self._pending)
        try:
            await self.journal.record(entries)
            del self._pending[: len(entries)]
            if last and self.job is not None:
                report = self.job.report
                await self.journal.add_counters(
                    requests=report.requests,
                    retried_requests=report.retried_requests,
                    split_requests=report.split_requests,
                )
        except JournalIOError as exc:
            self._failed(exc)
            if last:
                self.complete = False  # (otherwise they stay queued for one last try)

    def _failed(self, exc: JournalIOError) -> None:
        """Stop the job at the journal's first failure: nothing more is sent."""
        if self.problem is None:
            self.problem = str(exc)
            logger.error("bulk job: %s", self.problem)
            if self.job is not None:
                self.job.report.journal_error = self.problem
                self.job.stop(f"{exc}: nothing more is sent", drain=False)

    def _aborted(self) -> list[Entry]:
        """Items marked in flight that never got an outcome: the run was aborted."""
        entries = []
        report = self.job.report if self.job is not None else None
        for index, line in sorted(self._marked.items()):
            if index in self._handed:  # sent, and the answer never came
                entries.append(Entry(index, line, "unknown", error_message=ABORTED_IN_FLIGHT))
                status = OutcomeStatus.UNKNOWN
            elif index in self._maybe_applied_before:
                continue  # left in flight, as an earlier run left it
            else:  # never sent after all
                entries.append(Entry(index, line, "not_attempted"))
                status = OutcomeStatus.NOT_ATTEMPTED
            if report is not None:
                message = ABORTED_IN_FLIGHT if status is OutcomeStatus.UNKNOWN else None
                report._add(
                    ItemOutcome(index, None, status, None, None, message, line=line or None)
                )
        self._marked.clear()
        return entries

    async def close(self) -> None:
        try:
            if self.journal is not None:
                # Whatever is queued, the rows an abort left in flight, and the counters: once.
                self._pending.extend(self._aborted())
                with anyio.CancelScope(shield=True):
                    await self._save(last=True)
            if self.job is not None:
                self.job.report.journal_complete = self.complete
            if self._states is not None:
                await self._states.aclose()
            if self.journal is not None:
                with contextlib.suppress(JournalIOError):  # what it could not save, it has said
                    await self.journal.close()
        finally:
            self.lock.release()

    # -- helpers --------------------------------------------------------------------------------

    async def _state_of(self, index: int) -> Journalled | None:
        """The journalled row of ``index``: a streaming merge, indexes only ever grow."""
        states = self._states
        if states is None:
            return None
        try:
            if not self._started:
                self._started = True
                self._state = await anext(states, None)
            while self._state is not None and self._state.index < index:
                self._state = await anext(states, None)
        except JournalIOError as exc:
            self._failed(exc)
            self._states = None
            return None
        state = self._state
        return state if state is not None and state.index == index else None

    def _refs(self, item: Any) -> tuple[Any, Any]:
        if isinstance(item, Prepared) and type(item.key) is tuple and len(item.key) == 2:
            return item.key  # (ref id, ref type): what describe() gives, without a dict
        described = self.spec.describe(item)
        values = [v for k, v in described.items() if k != "line"]
        return (values[0], values[1]) if len(values) >= 2 else (None, None)
