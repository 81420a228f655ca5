"""mkdocs hook: files of the repository that the docs show, published beside the pages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
SHOWN = ["benchmarks/throughput.png", "benchmarks/results.json"]


def on_files(files: Files, config: Any) -> Files:
    """The benchmarks page includes benchmarks/README.md, whose chart and JSON sit beside it."""
    for name in SHOWN:
        source = ROOT / name
        files.append(File.generated(config, Path(name).name, abs_src_path=str(source)))
    return files
