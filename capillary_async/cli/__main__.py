"""``python -m capillary_async.cli``, the same as ``capillary-async``."""

from . import main

raise SystemExit(main())
