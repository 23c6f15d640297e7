"""CLI verbs prepare / demo-data, and one-line errors for bad input (exit 2, no traceback)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
from conftest import ROOT, UMB, needs_shared, simple_site, write_flux_csv

from dlfm_auto.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dlfm_auto", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )


def assert_user_error(res: subprocess.CompletedProcess, *needles: str) -> None:
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@needs_shared
def test_prepare_writes_daily_table_and_report(tmp_path):
    out = tmp_path / "daily.csv"
    res = run_cli("prepare", "--data", str(UMB), "--target", "NEE",
                  "--columns", "TA", "PPFD_IN", "SW_IN", "--out", str(out))
    assert res.returncode == 0, res.stderr
    for needle in ("rows read: 262992", "daylight rows (PPFD_IN > 4)", "days kept:",
                   "dropped:", "folds possible:", "target: NEE (explicit)"):
        assert needle in res.stdout
    t = pd.read_csv(out)
    assert list(t.columns) == ["DAY", "TA", "PPFD_IN", "SW_IN", "USTAR", "NEE", "SEASON_YEAR"]
    assert len(t) == 5285


def test_missing_file():
    assert_user_error(run_cli("prepare", "--data", "nope/missing.csv"), "not found", "demo-data")


def test_non_flux_csv(tmp_path):
    p = tmp_path / "other.csv"
    p.write_text("a,b,c\n1,2,3\n")
    assert_user_error(run_cli("prepare", "--data", str(p)), "not an AmeriFlux/FLUXNET file")


def test_missing_column_names_close_matches(site_file):
    res = run_cli("prepare", "--data", str(site_file), "--columns", "TA", "PPFD")
    assert_user_error(res, "PPFD", "closest: PPFD_IN")


def test_no_target_column(tmp_path):
    df = simple_site(days=400).drop(columns=["NEE"])
    p = write_flux_csv(tmp_path / "nt.csv", df)
    assert_user_error(run_cli("prepare", "--data", str(p)), "no target column", "--target")


def test_filter_that_empties_the_data_names_the_rule(site_file):
    res = run_cli("prepare", "--data", str(site_file), "--ustar-threshold", "5")
    assert_user_error(res, "USTAR rule")
    res = run_cli("prepare", "--data", str(site_file), "--min-count", "48")
    assert_user_error(res, "no day has >= 48 valid daylight records", "removed")


def test_empty_daylight(tmp_path):
    df = simple_site(days=400)
    df["PPFD_IN"] = 0.0
    df["SW_IN"] = 0.0
    p = write_flux_csv(tmp_path / "dark.csv", df)
    assert_user_error(run_cli("prepare", "--data", str(p)), "daylight rule", "removed all")


def test_too_few_years(tmp_path):
    p = write_flux_csv(tmp_path / "short.csv", simple_site(days=500))
    assert_user_error(run_cli("prepare", "--data", str(p)), "too few years")


def test_invalid_setting_names_parameter_and_allowed_values(site_file):
    res = run_cli("prepare", "--data", str(site_file), "--sequence-length", "0")
    assert_user_error(res, "sequence_length=0", "[1, 366]")


def test_demo_data_then_prepare(tmp_path, capsys):
    out = tmp_path / "demo.csv"
    assert main(["demo-data", "--out", str(out), "--years", "5", "--seed", "1"]) == 0
    assert "SYNTHETIC" in capsys.readouterr().out
    assert main(["prepare", "--data", str(out), "--sequence-length", "30"]) == 0
    text = capsys.readouterr().out
    assert "DEMO" in text and "folds possible" in text
    assert np.isfinite(float(text.split("samples at sequence_length=30: ")[1].split()[0]))
