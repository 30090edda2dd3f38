"""``cbcm bench``'s table, and its refusal without the source tree or the dev dependencies
(issue #7). The benchmarks themselves run with ``cbcm bench`` / ``make bench`` only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cli import bench
from services.cli.main import cli
from tests.bench.results import RESULTS_ENV, Figure, Target, record


def recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *figures: Figure) -> Path:
    path = tmp_path / "figures.jsonl"
    monkeypatch.setenv(RESULTS_ENV, str(path))
    for figure in figures:
        record(figure)
    return path


def test_the_table_shows_each_figure_its_baseline_the_ratio_and_the_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = recorded(
        tmp_path,
        monkeypatch,
        Figure("write path", "commands/s", "postgres", 700.0, "commands/s", baseline=800.0,
               baseline_name="raw appends", target=Target("ratio", ">=", 0.7)),
        Figure("audit verify", "events/s", "sqlite", 300_000.0, "events/s", baseline=1_000_000.0,
               baseline_name="SHA-256 alone", target=Target("ratio", ">=", 0.5)),
        Figure("load", "lag p99", "postgres", 31.5, "ms", target=Target("value", "<", 250.0),
               better="lower"),
        Figure("load", "peak RSS, api", "postgres", 109.4, "MB", better="lower"),
    )  # fmt: skip
    lines = bench.render(bench.read_figures(path)).splitlines()
    rows = {line.split()[0]: line for line in lines if line.startswith("  ")}
    assert set(rows) == {"commands/s", "events/s", "lag", "peak"}
    write = rows["commands/s"]
    assert "700" in write and "800" in write and "0.88" in write
    assert "ratio ≥ 0.70" in write and " met " in write and write.endswith("raw appends")
    verify = rows["events/s"]
    assert "300,000" in verify and "0.30" in verify and "NOT MET" in verify
    lag = rows["lag"]
    assert "31.5" in lag and "< 250.0 ms" in lag and " met" in lag and "NOT" not in lag
    assert "109" in rows["peak"] and "met" not in rows["peak"]
    titles = [line.split(":")[0].split()[0] for line in lines if line and line[0].isalpha()]
    assert titles == ["figure", "write", "audit", "load", "ratio"]


def test_a_ratio_of_times_is_the_baseline_over_the_figure() -> None:
    faster = Figure("b", "lag", "-", 10.0, "ms", baseline=20.0, better="lower")
    assert faster.ratio == 2.0
    assert Figure("b", "rate", "-", 10.0, "/s", baseline=20.0).ratio == 0.5
    assert Figure("b", "rate", "-", 10.0, "/s").ratio is None


def test_nothing_is_written_without_a_results_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(RESULTS_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    record(Figure("b", "rate", "-", 1.0, "/s"))
    assert list(tmp_path.iterdir()) == []


def test_figures_are_json_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = recorded(tmp_path, monkeypatch, Figure("b", "rate", "sqlite", 2.0, "/s", baseline=4.0))
    (line,) = path.read_text().splitlines()
    assert json.loads(line)["ratio"] == 0.5


def test_a_figure_that_cannot_be_read_is_shown_as_such() -> None:
    table = bench.render([{"bench": "b", "figure": "odd", "value": {"not": "a number"}}])
    assert "odd" in table and "cannot be read" in table


def test_bench_refuses_clearly_without_the_source_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "source_tree", lambda: None)
    result = CliRunner().invoke(cli, ["bench"])
    assert result.exit_code == 2
    assert "source tree" in result.output and "pip install -e '.[dev]'" in result.output


def test_bench_refuses_clearly_without_the_dev_dependencies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bench, "missing_dependencies", lambda: ["pytest_asyncio"])
    result = CliRunner().invoke(cli, ["bench"])
    assert result.exit_code == 2
    assert "pytest_asyncio missing" in result.output


def test_the_help_says_what_bench_needs() -> None:
    result = CliRunner().invoke(cli, ["bench", "--help"])
    assert result.exit_code == 0
    assert "source tree" in result.output and "dev dependencies" in result.output
