"""README Quickstart command one runs this example: keep it working."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_quickstart_makes_a_real_round_trip_of_both_endpoints() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "updateRedemption (request id local-1)" in out
    assert "redemption Fnpztw: bill txn-79" in out
    assert "updated POINT_AWARDED 117521910" in out
    assert "refused POINT_AWARDED 117521911: 3037" in out
