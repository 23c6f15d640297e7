"""Several sites in one study (issue 15): folds, provenance, per-site errors, workers.

Real shared sites (US-UMB, US-MMS, US-Tw3; TA, PPFD_IN, SW_IN), small budgets. Errors are
checked as users meet them: one line, exit 2, naming the site.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, MMS, PUE, ROOT, TW3, UMB, needs_shared
from test_study import PG_URL, _pg_available

from dlfm_auto._errors import UserError
from dlfm_auto.data import PrepareConfig, prepare
from dlfm_auto.data._read import file_sha256
from dlfm_auto.data._sites import read_site_info

pytestmark = needs_shared
COLS = ("TA", "PPFD_IN", "SW_IN")
NR1 = DATA / "oneflux" / "US-NR1_NEE_met.csv.gz"


def _cfg(*files: Path, **kw) -> PrepareConfig:
    kw.setdefault("columns", COLS)
    kw.setdefault("sequence_length", 7)
    return PrepareConfig(data=tuple(str(f) for f in files), **kw)


def _cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlfm_auto", *argv], cwd=cwd,
                          capture_output=True, text=True, timeout=600,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin",
                               # the session's cache: each site file is parsed once
                               "DLFM_AUTO_CACHE": os.environ["DLFM_AUTO_CACHE"]})


def test_leave_one_site_out_folds_hold_out_whole_sites_and_never_held_out_years():
    ds = prepare(_cfg(UMB, MMS, TW3, cv="sites"))
    assert ds.site_names == ("US-UMB", "US-MMS", "US-Tw3")
    # each site keeps its own last 3 season years out, as a one-site study would
    assert ds.site_eval_years == {"US-UMB": (2019, 2020, 2021), "US-MMS": (2018, 2019, 2020),
                                  "US-Tw3": (2016, 2017, 2018)}
    for site in ds.site_names:
        one = prepare(_cfg(UMB, MMS, TW3).single_site(
            dict(zip(ds.site_names, (UMB, MMS, TW3), strict=True))[site]))
        assert int(np.sum(ds.sample_sites == site)) == len(one.y)
    splits = ds.cv_splits()
    assert [s.name for s in splits] == ["site=US-UMB", "site=US-MMS", "site=US-Tw3"]
    held = {(s, d) for s, d in zip(ds.sample_sites[ds.heldout], ds.days[ds.heldout],
                                   strict=True)}
    for (label, val), split in zip(ds.folds(), splits, strict=True):
        site = label.split("=")[1]
        assert set(split.val_sites) == {site}
        assert not held & set(zip(split.val_sites, split.val_days, strict=True))
        train = ~ds.heldout & ~val
        assert site not in set(ds.sample_sites[train])  # the whole site is out
        assert not (ds.heldout & train).any()
        # normalisation from the training sites only
        flat = ds.X[train].reshape(-1, ds.X.shape[-1]).astype(np.float64)
        assert np.allclose(split.norm.mean, flat.mean(axis=0), rtol=1e-6)
        # the epoch is chosen on each training site's own newest training year
        inner_sites = set(ds.sample_sites[train][split.inner_val])
        assert inner_sites == set(ds.site_names) - {site}
    assert ds.n_folds == 3


def test_pooled_year_folds_cover_every_site_that_has_the_year():
    ds = prepare(_cfg(UMB, MMS, cv="years", folds=2))
    assert ds.fold_years[:2] == (2018, 2017)
    for split, year in zip(ds.cv_splits(), (2018, 2017), strict=True):
        # 2018 is a held-out year at US-MMS: only US-UMB scores it; 2017 is both sites'
        want = {"US-UMB"} if year == 2018 else {"US-UMB", "US-MMS"}
        assert set(split.val_sites) == want
        assert split.val_years == (year,)


def test_site_norm_uses_each_sites_training_years_and_static_features_are_constant(tmp_path):
    info = tmp_path / "sites.csv"
    info.write_text("site,igbp,elevation\nUS-UMB,DBF,234\nUS-MMS,DBF,275\nUS-Tw3,CRO,-9\n"
                    "XX-Other,GRA,1\n")
    ds = prepare(_cfg(UMB, MMS, TW3, site_norm=True, site_info=str(info)))
    names = ds.feature_names
    assert names[-3:] == ("site:igbp=CRO", "site:igbp=DBF", "site:elevation")
    for i in range(len(ds.site_names)):
        mine = ds.site == i
        train = mine & ~ds.heldout
        today = ds.X[train, -1, :3].astype(np.float64)
        assert np.allclose(today.mean(axis=0), 0, atol=1e-4)
        assert np.allclose(today.std(axis=0), 1, atol=1e-3)
        static = ds.X[mine][:, :, 3:]
        assert np.all(static == static[0, 0])  # one row per site, every day of every window
    tw3 = ds.X[ds.site == 2][0, 0, 3:]
    assert tw3.tolist() == [1.0, 0.0, -9.0]
    # the linear baseline stays on today's drivers: static features are not drivers
    from dlfm_auto.training import baselines

    assert baselines.driver_columns(names) == [0, 1, 2]


@pytest.mark.parametrize("text, words", [
    ("name,igbp\nUS-UMB,DBF\n", "needs a 'site' column"),
    ("site,igbp\nUS-UMB,DBF\n", "no row for site US-MMS"),
    ("site,igbp\nUS-UMB,DBF\nUS-MMS,\n", "column 'igbp' is empty for site US-MMS"),
    ("site,igbp\nUS-UMB,DBF\nUS-UMB,ENF\nUS-MMS,DBF\n", "site listed twice: US-UMB"),
])
def test_site_info_errors_name_the_problem(tmp_path, text, words):
    p = tmp_path / "s.csv"
    p.write_text(text)
    with pytest.raises(UserError, match=words):
        read_site_info(str(p), ("US-UMB", "US-MMS"))


def _truncated_copy(src: Path, dest: Path, keep_lines: int) -> Path:
    with gzip.open(src, "rt") as f:
        lines = [next(f) for _ in range(keep_lines)]
    dest.write_text("".join(lines))
    return dest


def test_bad_multi_site_input_is_one_line_exit_2_naming_the_site(tmp_path, capsys,
                                                                  monkeypatch):
    from dlfm_auto.cli import main

    monkeypatch.chdir(tmp_path)
    short = _truncated_copy(MMS, tmp_path / "short.csv", 3 + 2 * 365 * 24)  # two years
    copy = tmp_path / "umb-copy.csv.gz"
    shutil.copy(UMB, copy)
    cases = [
        ([UMB, TW3], ["--columns", "TA", "PPFD_IN", "P_RAIN"], ["site file", "P_RAIN"]),
        ([UMB, UMB], [], ["the same file twice"]),
        ([UMB, copy], [], ["the same site twice: US-UMB", "umb-copy.csv.gz"]),
        ([UMB, PUE], [], ["daily (DD) and sub-daily files mixed", "FR-Pue"]),
        ([UMB, short], [], ["site file short.csv", "too few years"]),
        ([UMB], ["--cv", "sites"], ["cv needs several sites"]),
    ]
    for files, extra, words in cases:
        rc = main(["run-study", "ann", "--data", *map(str, files), *extra, "--n-jobs", "0"])
        err = capsys.readouterr().err.strip()
        assert rc == 2, (files, err)
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        for w in words:
            assert w in err, (w, err)
        assert not (tmp_path / "studies").exists()  # refused before any storage is made
    # and end to end: a separate process prints the one line and exits 2
    r = _cli("run-study", "ann", "--data", str(UMB), str(UMB), cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("error: the same file twice")


def test_missing_driver_at_one_site_names_site_and_close_matches(tmp_path):
    with pytest.raises(UserError) as e:
        prepare(_cfg(UMB, TW3, columns=("TA", "PPFD_IN", "SWC_1_1")))
    msg = str(e.value)
    # US-UMB lacks it: the error names that file and the closest names it has
    assert msg.startswith("site file US-UMB_NEE_met.csv.gz") and "SWC_1_1" in msg


def test_multi_site_study_records_every_file_and_refuses_changes(tmp_path):
    from dlfm_auto.study import build_spec, create_or_resume
    from dlfm_auto.study._create import check_data, load_spec, load_study

    a, b = tmp_path / "a.csv.gz", tmp_path / "b.csv.gz"
    shutil.copy(UMB, a)
    shutil.copy(MMS, b)
    url = f"sqlite:///{tmp_path}/s.db"
    spec = build_spec("ann", _cfg(a, b, cv="sites"), length_given=True, n_trials=1,
                      max_epochs=2)
    create_or_resume(url, "ms", spec)
    stored = load_spec(load_study(url, "ms"))
    assert [f["site"] for f in stored.data_files] == ["US-UMB", "US-MMS"]
    assert stored.data_files[1]["sha256"] == file_sha256(b)
    assert stored.prep.data == (str(a), str(b)) and stored.prep.cv == "sites"
    # another order is another study
    other = build_spec("ann", _cfg(b, a, cv="sites"), length_given=True, n_trials=1,
                       max_epochs=2)
    with pytest.raises(UserError, match="other data or settings"):
        create_or_resume(url, "ms", other)
    # a changed file is refused by name
    b.write_bytes(b.read_bytes() + b"\n")
    with pytest.raises(UserError, match=r"data file .*b\.csv\.gz changed since the study ran"):
        check_data(stored)
    # copies given with --data must be one per site
    with pytest.raises(UserError, match="the study has 2"):
        check_data(stored, str(a))


def test_run_study_then_worker_joins_and_best_gives_site_r2(tmp_path):
    data = ["--data", str(UMB), str(MMS), str(TW3), "--columns", *COLS]
    r = _cli("run-study", "xgboost", *data, "--cv", "sites", "--n-trials", "2",
             "--max-epochs", "30", "--sequence-length", "7", "--study-name", "ms",
             "--cv-score", "median", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # the per-site lines beside the baselines (a row of the summary table)
    assert re.search(r"US-Tw3\s*\S\s*R² -?\d\.\d+ \(climatology", r.stdout), r.stdout
    w = _cli("worker", "ms", "--n-trials", "1", cwd=tmp_path)
    assert w.returncode == 0, w.stderr
    b = json.loads(_cli("best", "ms", "--json", cwd=tmp_path).stdout)
    assert b["counts"]["complete"] == 2  # the study's total: the worker added nothing extra
    assert set(b["site_r2"]) == {"US-UMB", "US-MMS", "US-Tw3"}
    # cv=sites: a site's R² is its fold's R² (the site when it was held out)
    labels = [lab.split("=")[1] for lab in b["fold_labels"]]
    assert b["site_r2"] == pytest.approx(dict(zip(labels, b["fold_r2"], strict=True)))
    assert b["median_site_r2"] == pytest.approx(float(np.median(b["fold_r2"])))
    assert b["value"] == pytest.approx(b["median_site_r2"])  # --cv-score median
    assert "best CV R² (median)" in r.stdout
    assert set(b["site_baselines"]["climatology"]) == set(b["site_r2"])
    assert -1e9 < b["pooled_r2"] <= 1


def test_pooled_score_needs_several_sites():
    from dlfm_auto.study import build_spec

    with pytest.raises(UserError, match="--cv-score pooled needs several sites"):
        build_spec("ann", PrepareConfig(data=str(UMB), columns=COLS), length_given=True,
                   cv_score="pooled")
    with pytest.raises(UserError, match="invalid cv_score='best'"):
        build_spec("ann", _cfg(UMB, MMS), length_given=True, cv_score="best")


@pytest.mark.slow
@pytest.mark.skipif(not _pg_available(), reason="PostgreSQL not reachable on 127.0.0.1:5432")
def test_postgresql_workers_run_a_multi_site_study(tmp_path):
    name = f"ms-{uuid.uuid4().hex[:8]}"
    data = ["--data", str(UMB), str(NR1), "--columns", *COLS, "--cv", "sites",
            "--search-site-norm"]
    r = _cli("run-study", "ann", *data, "--storage", PG_URL, "--study-name", name,
             "--n-trials", "4", "--max-epochs", "3", "--sequence-length", "1",
             "--n-jobs", "0", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    workers = [subprocess.Popen(
        [sys.executable, "-m", "dlfm_auto", "worker", name, "--storage", PG_URL],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin",
             "DLFM_AUTO_CACHE": os.environ["DLFM_AUTO_CACHE"]}) for _ in range(2)]
    for w in workers:
        _, err = w.communicate(timeout=600)
        assert w.returncode == 0, err
    b = json.loads(_cli("best", name, "--storage", PG_URL, "--json", cwd=tmp_path).stdout)
    assert b["counts"]["complete"] == 4 and sum(b["counts"].values()) == 4
    assert set(b["site_r2"]) == {"US-UMB", "US-NR1"} and "site_norm" in b["params"]


def test_pooled_year_study_scores_each_site_over_the_year_folds(tmp_path):
    """--cv years: site_r2 is each site's R² over its days in every fold, pooled."""
    import optuna

    from dlfm_auto.study import build_spec, create_or_resume, open_storage
    from dlfm_auto.study._worker import WorkerOptions, work

    url = f"sqlite:///{tmp_path}/y.db"
    spec = build_spec("xgboost", _cfg(UMB, MMS, cv="years", folds=2, sequence_length=1),
                      length_given=True, n_trials=1, max_epochs=20, pruner="none")
    create_or_resume(url, "y", spec)
    work(WorkerOptions(url, "y"))
    t = optuna.load_study(study_name="y", storage=open_storage(url, heartbeat=False)).best_trial
    assert t.user_attrs["fold_labels"] == ["val=2018", "val=2017"]
    # 2018 is held out at US-MMS, so only 2017 scores it; US-UMB is scored in both folds
    n_val = t.user_attrs["n_val"]
    assert t.user_attrs["site_n"]["US-UMB"] + t.user_attrs["site_n"]["US-MMS"] == sum(n_val)
    ds = prepare(spec.prep)
    mms_2017 = int(np.sum((ds.sample_sites == "US-MMS") & (ds.season_year == 2017)))
    assert t.user_attrs["site_n"]["US-MMS"] == mms_2017
    assert set(t.user_attrs["site_r2"]) == {"US-UMB", "US-MMS"}
