"""Serve the emulator until interrupted: ``python -m capillary_async.testing --port 8080``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Sequence

from ._command import add_emulator_arguments, serve_emulator


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m capillary_async.testing``."""
    parser = argparse.ArgumentParser(
        prog="python -m capillary_async.testing",
        description="Serve a stateful local Capillary emulator until interrupted.",
    )
    add_emulator_arguments(parser)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_emulator(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
