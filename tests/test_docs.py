"""Every Python block of the README and the docs runs as written, and type-checks.

Each block is a whole program. It runs in a process of its own, in an empty
directory, with the environment a reader sets for a local emulator
(``CAPILLARY_BASE_URL``, ``CAPILLARY_USERNAME``, ``CAPILLARY_PASSWORD``), an
emulator with the default seed behind it, and the files the page tells the
reader to make (``extend.jsonl`` from ``--write-sample``, a Redis for
``CAPILLARY_REDIS_URL``). Then all blocks and the examples go through
``mypy --strict`` together.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from capillary_async.testing import Emulator, sample_expiry_updates, write_csv, write_jsonl

from .redis_server import redis_server  # noqa: F401 - the fixture, for CAPILLARY_REDIS_URL

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python\n(.*?)^```\n", re.MULTILINE | re.DOTALL)


def _blocks() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 2
            found.append((f"{page.relative_to(ROOT)}:{line}", match.group(1)))
    return found


BLOCKS = _blocks()


def test_the_pages_hold_blocks_to_run() -> None:
    assert len(BLOCKS) >= 15  # a page renamed or a fence misspelt would silently drop them
    assert any(where.startswith("README.md") for where, _ in BLOCKS)


def _environment(base_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPILLARY_")}
    env.update(
        CAPILLARY_BASE_URL=base_url,
        CAPILLARY_USERNAME="demo",
        CAPILLARY_PASSWORD="demo",
        PYTHONPATH=str(ROOT),
    )
    return env


@pytest.mark.parametrize(("where", "code"), BLOCKS, ids=[where for where, _ in BLOCKS])
async def test_the_block_runs_against_the_emulator(
    where: str, code: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    async with Emulator() as emu:
        env = _environment(emu.base_url)
        if "CAPILLARY_REDIS_URL" in code:
            env["CAPILLARY_REDIS_URL"] = request.getfixturevalue("redis_server").url
        rows = sample_expiry_updates(emu.store, 300, bad=0.02, now=emu.clock.now())
        if "extend.jsonl" in code:  # as `capillary-async emulator --write-sample` makes it
            write_jsonl(tmp_path / "extend.jsonl", rows)
        if "extend.csv" in code:
            write_csv(tmp_path / "extend.csv", rows)
        script = tmp_path / "block.py"
        script.write_text(code, encoding="utf-8")
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(script), cwd=tmp_path, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(process.communicate(), 90)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert process.returncode == 0, f"{where} failed:\n{err.decode()}\n{out.decode()}"


def test_the_blocks_and_the_examples_pass_mypy_strict(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    folder = tmp_path / "blocks"
    folder.mkdir()
    names = {}
    for n, (where, code) in enumerate(BLOCKS):
        name = f"block_{n:03d}.py"
        names[name] = where
        (folder / name).write_text(code, encoding="utf-8")
    examples = sorted(str(p) for p in (ROOT / "examples").glob("*.py"))
    done = subprocess.run(
        [
            sys.executable, "-m", "mypy", "--strict", "--no-incremental",
            "--cache-dir", os.devnull, str(folder), *examples,
        ],
        capture_output=True, text=True, timeout=600, check=False, cwd=ROOT,
    )  # fmt: skip
    report = done.stdout
    for name, where in names.items():
        report = report.replace(str(folder / name), where).replace(f"blocks/{name}", where)
    assert done.returncode == 0, report
