"""A stateful local Capillary emulator, for demos, integration tests and benchmarks.

```python
from capillary_async.testing import Emulator

async with Emulator(seed=7) as emu:
    async with CapillaryClient(emu.base_url, auth=BasicAuth("demo", "demo")) as client:
        ...
    assert emu.audit.times_applied(117000000, "POINT_AWARDED") == 1
```

It is also a pytest plugin (the ``capillary_emulator`` fixture) and a command
(``python -m capillary_async.testing``). The SDK's core never imports this
package.
"""

from ._command import add_emulator_arguments, serve_emulator
from ._samples import BAD_KINDS, flatten, sample_expiry_updates, write_csv, write_jsonl
from ._server import (
    ENVELOPES,
    Emulator,
    EmulatorClock,
    Faults,
    ManualTime,
    SystemTime,
    parse_timezone,
)
from ._store import (
    REF_TYPES,
    Audit,
    Award,
    Customer,
    RedemptionRecord,
    Stats,
    Store,
    seeded_awards,
)

__all__ = [
    "BAD_KINDS",
    "ENVELOPES",
    "REF_TYPES",
    "Audit",
    "Award",
    "Customer",
    "Emulator",
    "EmulatorClock",
    "Faults",
    "ManualTime",
    "RedemptionRecord",
    "Stats",
    "Store",
    "SystemTime",
    "add_emulator_arguments",
    "flatten",
    "parse_timezone",
    "sample_expiry_updates",
    "seeded_awards",
    "serve_emulator",
    "write_csv",
    "write_jsonl",
]
