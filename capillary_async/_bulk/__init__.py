"""The bulk engine, one module per concern.

- ``_outcomes``: what a job hands back (``ItemOutcome``, ``Progress``) and a
  spec's reading of an answer (``Merged``, ``Verdict``);
- ``_report``: ``BulkReport`` and its writers, one layout for every front end;
- ``_pacing``: when a request may go (rate, 429 pause, AIMD) and the retry budget;
- ``_chunker``: packing items into chunks, a plain synchronous object;
- ``_specs``: what differs per endpoint (validate, key, send, merge);
- ``_job``: the scheduler (reader, packer, workers);
- ``_stream``: a job for the length of an ``async with`` block;
- ``_files``: input files as rows; ``_journal``, ``_lock``, ``_resume``:
  resumable jobs;
- ``_options``: ``BulkOptions``.
"""

from ._files import InputFile, InputRow
from ._options import BulkOptions, BulkOptionsDict
from ._outcomes import ItemOutcome, Lazy, Merged, OutcomeStatus, Progress, Verdict
from ._pacing import MIN_RATE, RetryBudget
from ._report import BulkReport, failure_columns, write_csv
from ._specs import BulkSpec, ExpirySpec, RedemptionSpec
from ._stream import OutcomeStream, open_job

__all__ = [
    "MIN_RATE",
    "BulkOptions",
    "BulkOptionsDict",
    "BulkReport",
    "BulkSpec",
    "ExpirySpec",
    "InputFile",
    "InputRow",
    "ItemOutcome",
    "Lazy",
    "Merged",
    "OutcomeStatus",
    "OutcomeStream",
    "Progress",
    "RedemptionSpec",
    "RetryBudget",
    "Verdict",
    "failure_columns",
    "open_job",
    "write_csv",
]
