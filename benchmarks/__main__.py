"""Runs every benchmark scenario; none exist yet, so this says so and exits cleanly."""

from __future__ import annotations

import sys

SCENARIOS: list[str] = []


def main() -> int:
    if not SCENARIOS:
        print("no benchmark scenarios yet", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
