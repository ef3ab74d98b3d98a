"""The demo (``python -m torchzero``): quick run prints its tables, chains agree with ``torch.optim``."""
from __future__ import annotations

import contextlib
import io
import re
import time

import pytest
import torch

from torchzero import demo

FLOAT = re.compile(r"[-+]?\d+\.\d+e[-+]\d+")


def _table(out: str, title_start: str) -> list[str]:
    """Rows of the table whose title line starts with ``title_start`` (between the 2nd and 3rd rules)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title_start))
    rules = [i for i in range(start, len(lines)) if lines[i] and set(lines[i]) == {"-"}][:3]
    assert len(rules) == 3, f"table {title_start!r} is not complete"
    return lines[rules[1] + 1:rules[2]]


def _first_float(row: str) -> float:
    match = FLOAT.search(row)
    assert match is not None, row
    return float(match.group())


def _pairs(rows: list[str]) -> list[tuple[str, str]]:
    """(chain row, reference row) for each reference (``  vs ...``) row."""
    return [(rows[i - 1], row) for i, row in enumerate(rows) if row.startswith("  vs ")]


@pytest.fixture(scope="module")
def quick_output() -> tuple[str, float]:
    """stdout of ``main(["--quick"])`` (run once for the module) and its wall time."""
    buffer = io.StringIO()
    threads = torch.get_num_threads()
    start = time.perf_counter()
    with contextlib.redirect_stdout(buffer):
        demo.main(["--quick"])
    seconds = time.perf_counter() - start
    assert torch.get_num_threads() == threads, "main must restore the number of torch threads"
    return buffer.getvalue(), seconds


def test_quick_demo_is_quick(quick_output):
    _, seconds = quick_output
    assert seconds < 15, f"main(['--quick']) took {seconds:.1f}s"


def test_main_prints_to_stdout(capsys):
    demo.main(["--quick", "--task", "rosenbrock", "--steps", "5"])
    out = capsys.readouterr().out
    assert "Rosenbrock" in out
    assert "tz.m.Adam() -> tz.m.LR(0.1)" in out


def test_rosenbrock_table(quick_output):
    out, _ = quick_output
    rows = _table(out, "Rosenbrock")
    for spec in demo.ROSENBROCK_CHAINS:
        assert any(row.startswith(str(spec)) for row in rows), f"no row for {spec}"
        if spec.reference is not None:
            assert any(row.startswith(f"  vs {spec.reference}") for row in rows), f"no row for {spec.reference}"
    pairs = _pairs(rows)
    assert len(pairs) == sum(spec.reference is not None for spec in demo.ROSENBROCK_CHAINS)
    for chain_row, reference_row in pairs:
        assert _first_float(chain_row) == pytest.approx(_first_float(reference_row), rel=1e-3, abs=1e-12)


def test_rosenbrock_chains_match_torch():
    results = demo.run_rosenbrock(demo.ROSENBROCK_QUICK_STEPS)
    f0 = float(demo.rosenbrock(torch.tensor(demo.ROSENBROCK_X0, dtype=torch.float64)))
    for r in results:
        # first-order chains evaluate once per step; line searches evaluate a varying number of times (and not at
        # all once the direction is zero at the minimum)
        if r.is_reference or "LR" in r.name:
            assert r.evaluations == demo.ROSENBROCK_QUICK_STEPS, r.name
        else:
            assert r.evaluations > 0, r.name
        assert r.final_loss < f0, f"{r.name} made no progress"
    for chain_result, reference in zip(results, results[1:]):
        if not reference.is_reference:
            continue
        assert not chain_result.is_reference
        assert reference.final_loss == pytest.approx(chain_result.final_loss, rel=1e-9, abs=1e-12), reference.name
        torch.testing.assert_close(reference.params, chain_result.params, rtol=1e-9, atol=1e-12)


def test_mlp_table(quick_output):
    pytest.importorskip("sklearn")
    out, _ = quick_output
    title = next(line for line in out.splitlines() if line.startswith("MLP"))
    initial = float(re.search(r"initial train loss (\d+\.\d+)", title).group(1))
    rows = _table(out, "MLP")
    for spec in demo.MLP_CHAINS:
        assert any(row.startswith(str(spec)) for row in rows), f"no row for {spec}"
    assert len(rows) == len(demo.MLP_CHAINS) + sum(spec.reference is not None for spec in demo.MLP_CHAINS)
    for row in rows:
        assert _first_float(row) < initial, f"no improvement: {row}"
        assert "%" in row


def test_mlp_runs_improve_and_match_torch():
    pytest.importorskip("sklearn")
    results = demo.run_mlp(demo.MLP_QUICK_EPOCHS)
    initial = results[0].initial_loss
    for r in results:
        assert r.initial_loss == initial, "every run must start from the same weights"
        assert r.final_loss < 0.5 * initial, f"{r.name}: {r.final_loss} vs initial {initial}"
        assert r.metrics["test acc"] > 0.8, r.name
        assert r.evaluations > 0
    for chain_result, reference in zip(results, results[1:]):
        if reference.is_reference:
            assert reference.final_loss == pytest.approx(chain_result.final_loss, rel=1e-2), reference.name


def test_mlp_skipped_without_sklearn(monkeypatch, capsys):
    monkeypatch.setattr(demo, "has_sklearn", lambda: False)
    demo.main(["--task", "mlp"])
    out = capsys.readouterr().out
    assert "pip install scikit-learn" in out
    assert "train loss" not in out
