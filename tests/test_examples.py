"""README Quickstart command one runs this example: keep it working."""

from __future__ import annotations

import re
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
    assert "emulator at http://127.0.0.1:" in out
    assert re.search(r"updateRedemption \(request id emu-\d+\)", out)
    assert re.search(r"redemption \w{6}: bill txn-79, purpose 'Update redemption details'", out)
    assert re.search(r"updateExpiry \(request id emu-\d+\)", out)
    assert re.search(r"updated POINT_AWARDED\w* 1170\d+: .+ -> .+", out)
    assert re.search(r"refused POINT_AWARDED\w* 1170\d+: 3037 ", out)
