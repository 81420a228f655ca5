"""The emulator's command line: its options, and serving until interrupted.

Public (``capillary_async.testing.add_emulator_arguments`` / ``serve_emulator``)
so that ``capillary-async emulator`` and ``python -m capillary_async.testing``
share one set of options.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from ._samples import sample_expiry_updates, write_csv, write_jsonl
from ._server import ENVELOPES, Emulator, Faults


def _latency(text: str) -> float | tuple[float, float]:
    """``20`` (fixed) or ``10-50`` (uniform range), in milliseconds."""
    low, sep, high = text.partition("-")
    try:
        if sep:
            return (float(low) / 1000, float(high) / 1000)
        return float(text) / 1000
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 20 or 10-50 (ms), got {text!r}") from None


def _rate(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"a rate is between 0 and 1, got {text}")
    return value


FAULT_OPTIONS = {
    "fault_429": "rate_429",
    "fault_429_no_retry_after": "rate_429_no_retry_after",
    "fault_500": "rate_500",
    "fault_503": "rate_503",
    "fault_521": "rate_521",
    "fault_drop_before": "drop_before",
    "fault_drop_after": "drop_after",
    "fault_slow": "slow",
}


_FAULT_HELP = {
    "fault_429": "answered 429 with Retry-After",
    "fault_429_no_retry_after": "answered 429 without Retry-After",
    "fault_500": "answered 500",
    "fault_503": "answered 503 (Capillary's 4001)",
    "fault_521": "answered 521",
    "fault_drop_before": "dropped before they are applied",
    "fault_drop_after": "applied, then dropped without an answer",
    "fault_slow": "answered only after --slow-seconds",
}


def add_emulator_arguments(parser: argparse.ArgumentParser) -> None:
    """The emulator's options, shared with the ``capillary-async emulator`` command."""
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=8080, help="port; 0 picks a free one (default: %(default)s)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the data set and faults (default: %(default)s)"
    )
    parser.add_argument(
        "--customers", type=int, default=100, help="customers to make (default: %(default)s)"
    )
    parser.add_argument(
        "--awards-per-customer",
        type=int,
        default=5,
        help="points-awarded records per customer (default: %(default)s)",
    )
    parser.add_argument(
        "--redemptions", type=int, default=20, help="redemptions to make (default: %(default)s)"
    )
    parser.add_argument(
        "--latency-ms",
        type=_latency,
        default=0.0,
        metavar="MS|LOW-HIGH",
        help="delay before each answer, fixed or uniform in LOW-HIGH (default: 0)",
    )
    parser.add_argument(
        "--timezone", default="UTC", help="cluster timezone: UTC or +05:30 (default: %(default)s)"
    )
    parser.add_argument(
        "--envelope",
        choices=ENVELOPES,
        default=ENVELOPES[0],
        help="which documented shape updateExpiry answers in (default: %(default)s)",
    )
    parser.add_argument(
        "--partial-status",
        type=int,
        choices=(200, 201, 400),
        default=201,
        help="status of an updateExpiry answer with per-item failures (default: %(default)s)",
    )
    parser.add_argument(
        "--max-items",
        type=int,
        default=100,
        help="most items one updateExpiry request may hold, else 400 / 8931 (default: %(default)s)",
    )
    parser.add_argument(
        "--token-ttl",
        type=int,
        default=300,
        help="OAuth token life, seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--rate-limit",
        type=float,
        default=None,
        help="requests per second across all clients, 429 above it (default: no limit)",
    )
    parser.add_argument("--username", default="demo", help="Basic auth user (default: %(default)s)")
    parser.add_argument("--password", default="demo", help="Basic auth password (default: demo)")
    parser.add_argument("--client-key", default="demo", help="OAuth client key (default: demo)")
    parser.add_argument(
        "--client-secret", default="demo", help="OAuth client secret (default: demo)"
    )
    for option, what in _FAULT_HELP.items():
        parser.add_argument(
            "--" + option.replace("_", "-"),
            dest=option,
            type=_rate,
            default=0.0,
            metavar="RATE",
            help=f"share of requests (0 to 1) {what} (default: 0)",
        )
    parser.add_argument(
        "--slow-seconds",
        type=float,
        default=30.0,
        help="how long a 'slow' fault holds its answer (default: %(default)s)",
    )
    parser.add_argument(
        "--retry-after",
        type=float,
        default=1.0,
        help="Retry-After of a 429 fault, seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--write-sample",
        metavar="PATH",
        help="write input that matches this emulator's records (.jsonl or .csv), then serve",
    )
    parser.add_argument(
        "--sample-count",
        type=int,
        default=1000,
        help="rows of --write-sample (default: %(default)s)",
    )
    parser.add_argument(
        "--sample-bad",
        type=_rate,
        default=0.02,
        help="share of --write-sample rows the client or the server refuses (default: %(default)s)",
    )


def emulator_from_args(args: argparse.Namespace) -> Emulator:
    """An emulator configured from parsed options."""
    faults = Faults(
        slow_seconds=args.slow_seconds,
        retry_after=args.retry_after,
        **{field: getattr(args, option) for option, field in FAULT_OPTIONS.items()},
    )
    return Emulator(
        host=args.host,
        port=args.port,
        seed=args.seed,
        customers=args.customers,
        awards_per_customer=args.awards_per_customer,
        redemptions=args.redemptions,
        timezone=args.timezone,
        latency=args.latency_ms,
        faults=faults,
        rate_limit=args.rate_limit,
        envelope=args.envelope,
        partial_status=args.partial_status,
        max_items=args.max_items,
        token_ttl=args.token_ttl,
        username=args.username,
        password=args.password,
        client_key=args.client_key,
        client_secret=args.client_secret,
    )


async def serve_emulator(args: argparse.Namespace) -> None:
    """Run until cancelled, after saying where and with which credentials."""
    emulator = emulator_from_args(args)
    if args.write_sample:
        items = sample_expiry_updates(
            emulator.store,
            args.sample_count,
            seed=args.seed,
            bad=args.sample_bad,
            now=emulator.clock.now(),
        )
        writer = write_csv if args.write_sample.endswith(".csv") else write_jsonl
        count = writer(args.write_sample, items)
        print(f"wrote {count} sample items to {args.write_sample}", file=sys.stderr)
    shown_log = logging.getLogger("capillary_async.emulator")
    if not shown_log.handlers:  # what it notes (a client that went away), one line each
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("emulator: %(message)s"))
        shown_log.addHandler(handler)
        shown_log.setLevel(logging.INFO)
    async with emulator:
        default = args.password == "demo" and args.client_secret == "demo"
        shown = "demo" if default else "<as configured>"
        print(
            f"Capillary emulator on {emulator.base_url}\n"
            f"  Basic auth: {args.username} / {shown}\n"
            f"  OAuth key/secret: {args.client_key} / {shown}\n"
            f"  {len(emulator.store.customers)} customers, {len(emulator.store.awards)} "
            f"points-awarded records, {len(emulator.store.redemptions)} redemptions\n"
            "Ctrl-C stops it.",
            file=sys.stderr,
            flush=True,
        )
        await asyncio.Event().wait()
