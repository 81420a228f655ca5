"""The ``capillary-async`` command: resumable bulk jobs from files, the emulator, a demo.

Exit status: 0 every item succeeded, 1 some did not, 2 a usage or configuration
error (nothing sent), 130 interrupted (journal saved).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import textwrap
from collections.abc import Mapping, Sequence

from .. import DEFAULT_MAX_RESPONSE_BYTES, __version__, excerpt
from ._env import UsageError, credentials_from_env, target_from
from ._run import EXIT_INTERRUPTED, EXIT_USAGE, ApplyOptions, apply

__all__ = ["main"]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _rate(text: str) -> float:
    value = float(text)
    if not value >= 0.001:  # slower is a typo, and a job that would wait for days
        raise argparse.ArgumentTypeError("must be at least 0.001 requests per second")
    return value


def _shard(text: str) -> tuple[int, int]:
    k, sep, n = text.partition("/")
    try:
        shard = (int(k), int(n))
    except ValueError:
        shard = (0, 0)
    if not sep or not 1 <= shard[0] <= shard[1]:
        raise argparse.ArgumentTypeError(f"expected K/N with 1 <= K <= N, such as 2/4, got {text}")
    return shard


_APPLY_EPILOG = """\
example:
  CAPILLARY_USERNAME=till CAPILLARY_PASSWORD=... \\
    capillary-async {kind} apply rows.jsonl --cluster EU{chunk} --journal job.db
  (rerun the same command to resume; capillary-async emulator --write-sample
  rows.jsonl makes rows that match a local emulator)

exit codes:
  0    every row succeeded (a dry run: every row is valid)
  1    the job ran, and some rows did not succeed (or are invalid), or the
       journal or an output could not be written: see the summary
  2    refused before sending anything: options, the input file or a path,
       the preflight, a journal or a shard another run holds
  130  interrupted (Ctrl-C); rerun with the same --journal to resume
"""


def _apply_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], kind: str) -> None:
    group = sub.add_parser(kind, help=f"{kind} bulk jobs")
    actions = group.add_subparsers(dest="action", required=True)
    parser = actions.add_parser(
        "apply",
        help=f"apply an {kind} file" if kind == "expiry" else "apply a redemption file",
        description=textwrap.fill(
            "INPUT is .jsonl (one wire-format object a line), .csv (a header of wire names, "
            "nested fields as dotted names such as expiryDate.expiryType) or - for JSONL on "
            "standard input. Credentials come from CAPILLARY_USERNAME with CAPILLARY_PASSWORD "
            "or CAPILLARY_PASSWORD_MD5, CAPILLARY_CLIENT_KEY with CAPILLARY_CLIENT_SECRET, or "
            "CAPILLARY_TOKEN; the target from --base-url / --cluster or CAPILLARY_BASE_URL / "
            "CAPILLARY_CLUSTER.",
            79,
        ),
        epilog=_APPLY_EPILOG.format(
            kind=kind, chunk=" --chunk-size 100" if kind == "expiry" else ""
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", metavar="INPUT", help="the rows: FILE.jsonl, FILE.csv or -")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--base-url", metavar="URL", help="the API's base URL, such as https://...")
    where.add_argument("--cluster", metavar="NAME", help="EU, APAC, APAC2, SEA, US, USHC, CN...")
    if kind == "expiry":
        parser.add_argument(
            "--chunk-size",
            type=_positive_int,
            default=100,
            help="items per request (default: %(default)s)",
        )
    parser.add_argument(
        "--concurrency",
        type=_positive_int,
        default=8,
        help="requests in flight at most (default: %(default)s)",
    )
    parser.add_argument("--rate", type=_rate, help="requests per second at most (default: none)")
    parser.add_argument(
        "--adaptive",
        action="store_true",
        help="halve the rate on a 429 and let it grow back (AIMD), as a fleet settles",
    )
    parser.add_argument(
        "--redis",
        metavar="URL",
        help=(
            "share the pace (--rate, cooldowns, the adaptive rate) with every process using "
            "the same limiter name, through this Redis (also CAPILLARY_REDIS_URL)"
        ),
    )
    tls = (
        ("--redis-ca", "CAPILLARY_REDIS_CA", "the CA certificates (PEM) that signed Redis's"),
        ("--redis-cert", "CAPILLARY_REDIS_CERT", "a client certificate (PEM) for Redis's"),
        ("--redis-key", "CAPILLARY_REDIS_KEY", "the unencrypted key (PEM) of --redis-cert, for"),
    )
    for flag, variable, what in tls:
        parser.add_argument(
            flag,
            metavar="FILE",
            help=f"{what} TLS, with a rediss:// URL (also {variable})",
        )
    parser.add_argument(
        "--limiter-name",
        metavar="NAME",
        help="the shared pace's name (default: derived from the target and the user or key)",
    )
    parser.add_argument(
        "--shard",
        type=_shard,
        metavar="K/N",
        help=(
            "take every N-th row starting at row K (1-based): N machines split one file. "
            "With --redis each run claims its shard there, and a second live run of the "
            "same or an overlapping shard of this file is refused (exit 2). Without "
            "--redis nothing coordinates them: run each K/N once, all with the same N, "
            "each with its own journal, and resume a shard only with its own journal"
        ),
    )
    parser.add_argument(
        "--max-response-bytes",
        type=_positive_int,
        default=DEFAULT_MAX_RESPONSE_BYTES,
        metavar="N",
        help="refuse an answer whose body is larger (default: 16 MiB)",
    )
    parser.add_argument("--report", metavar="PATH", help="write the JSON report here")
    parser.add_argument("--failures", metavar="PATH", help="CSV of every row that did not succeed")
    parser.add_argument(
        "--journal",
        metavar="PATH",
        help=(
            "SQLite journal: rerun to resume (a regular file; one process at a time, "
            "locked by the OS)"
        ),
    )
    parser.add_argument("--dry-run", action="store_true", help="validate every row, send nothing")
    parser.add_argument(
        "--no-preflight",
        dest="preflight",
        action="store_false",
        help=(
            "skip the check made before the first row: one request that changes nothing "
            "(updateExpiry with no items) to prove the target and the credentials (exit 2 "
            "if they do not work)"
        ),
    )
    parser.add_argument("--fail-fast", action="store_true", help="stop at the first chunk failure")
    parser.add_argument(
        "--retry-unknown",
        action="store_true",
        help=(
            "on resume, also resend FIXED_DAYS / FIXED_MONTHS rows whose outcome is unknown "
            "(left in flight, or sent without a clear answer): check them first"
        ),
    )


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    parser = argparse.ArgumentParser(
        prog="capillary-async",
        description="Bulk jobs for Capillary's loyalty points APIs, from files.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"capillary-async {__version__} (Python {sys.version.split()[0]})",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _apply_parser(sub, "expiry")
    _apply_parser(sub, "redemption")
    emulator = sub.add_parser("emulator", help="serve the local Capillary emulator")
    from ..testing import add_emulator_arguments

    add_emulator_arguments(emulator)
    demo = sub.add_parser("demo", help="a bulk job against the built-in emulator, no setup")
    demo.add_argument(
        "--items",
        type=_positive_int,
        default=20_000,
        help="rows in the sample file (default: %(default)s)",
    )
    demo.add_argument(
        "--dir",
        metavar="PATH",
        help="where to write the sample and the report (default: a temporary directory)",
    )
    return parser


async def _dispatch(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    if args.command == "demo":
        from ._demo import demo

        return await demo(items=args.items, directory=args.dir)
    options = ApplyOptions(
        kind=args.command,
        input=args.input,
        chunk_size=getattr(args, "chunk_size", 1),
        concurrency=args.concurrency,
        rate=args.rate,
        report=args.report,
        failures=args.failures,
        journal=args.journal,
        dry_run=args.dry_run,
        fail_fast=args.fail_fast,
        retry_unknown=args.retry_unknown,
        max_response_bytes=args.max_response_bytes,
        redis=args.redis or env.get("CAPILLARY_REDIS_URL") or None,
        redis_ca=args.redis_ca or env.get("CAPILLARY_REDIS_CA") or None,
        redis_cert=args.redis_cert or env.get("CAPILLARY_REDIS_CERT") or None,
        redis_key=args.redis_key or env.get("CAPILLARY_REDIS_KEY") or None,
        limiter_name=args.limiter_name,
        adaptive=args.adaptive,
        shard=args.shard,
        preflight=args.preflight,
    )
    if options.dry_run:  # nothing is sent: a journal needs only the target it was made for
        target = target_from(args.base_url, args.cluster, env) if options.journal else None
        return await apply(options, base_url=target, auth=None)
    base_url = target_from(args.base_url, args.cluster, env)
    auth = credentials_from_env(env)
    return await apply(options, base_url=base_url, auth=auth)


def _show_limiter_warnings() -> None:
    """A shared pace that falls back to local pacing (or comes back) says so on stderr."""
    logger = logging.getLogger("capillary_async.redis")
    if not any(getattr(h, "_capillary_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("\ncapillary-async: warning: %(message)s"))
        handler.setLevel(logging.WARNING)
        handler._capillary_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Entry point of ``capillary-async``."""
    args = build_parser().parse_args(argv)
    if args.command == "emulator":
        from ..testing import serve_emulator

        try:
            asyncio.run(serve_emulator(args))
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        return 0
    _show_limiter_warnings()
    try:
        return asyncio.run(_dispatch(args, os.environ if env is None else env))
    except UsageError as exc:
        # Built from our words and neutralised quotes; neutralised again as a whole, so
        # no control character from a file name or a value can reach the terminal.
        print(f"capillary-async: error: {excerpt(exc, 20_000)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
