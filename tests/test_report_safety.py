"""Reports never touch what they do not own (issue 14.1/14.2, 11.6/11.7) and refuse bad options
before any work: each refusal is one line on stderr, exit 2, and leaves every file as it was."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest
from conftest import simple_site, write_flux_csv

from dlfm_auto import UserError
from dlfm_auto.cli import main
from dlfm_auto.reports._common import write_json
from dlfm_auto.study._spec import STUDY_NAME_RULE, check_study_name


def snapshot(*roots: Path) -> dict[str, tuple]:
    """Every path under the roots with its kind, mode and content hash."""
    out: dict[str, tuple] = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            st = p.lstat()
            if p.is_symlink():
                out[str(p)] = ("link", os.readlink(p))
            elif p.is_dir():
                out[str(p)] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                out[str(p)] = ("file", stat.S_IMODE(st.st_mode),
                               hashlib.sha256(p.read_bytes()).hexdigest())
    return out


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A tiny ann study (4 years: 1 held out, 2 folds, 2 epochs) and one with no held-out years."""
    d = tmp_path_factory.mktemp("safety")
    data = write_flux_csv(d / "site.csv", simple_site(days=4 * 365))
    url = f"sqlite:///{d}/s.db"
    common = ["--data", str(data), "--target", "NEE", "--columns", "TA", "PPFD_IN",
              "--folds", "2", "--n-trials", "1", "--max-epochs", "2", "--storage", url, "--quiet"]
    assert main(["run-study", "ann", "--eval-years", "1", "--study-name", "tiny",
                 "--sequence-length", "1", *common]) == 0
    assert main(["run-study", "ann", "--eval-years", "0", "--study-name", "noeval", *common]) == 0
    victim = d / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    return {"dir": d, "data": data, "url": url, "victim": victim}


@pytest.mark.parametrize("name", ["{victim}", ".", "..", "a/b", "../x", "-x", ".hidden",
                                  "x" * 129, "a\nb", "a\\b"])
def test_unsafe_study_name_is_refused_at_creation(site, tmp_path, capsys, name):
    name = name.format(victim=site["victim"])
    url = f"sqlite:///{tmp_path}/new.db"
    before = snapshot(site["dir"], tmp_path)
    rc = main(["run-study", "ann", "--data", str(site["data"]), "--target", "NEE", "--columns",
               "TA", "--eval-years", "1", "--folds", "2", "--n-trials", "1", "--storage", url,
               f"--study-name={name}", "--quiet"])
    assert rc == 2
    assert "invalid study name" in one_line_error(capsys)
    assert snapshot(site["dir"], tmp_path) == before  # no database created, victim intact


def test_study_name_rule():
    for ok in ("lstm-US-UMB", "lstm-US-UMB-grid", "memory-lstm-XX-Tst-0a1b2c3d", "lstm-my site",
               "a", "x" * 128, "étude.2+1_b"):
        assert check_study_name(ok) == ok
    with pytest.raises(UserError) as e:
        check_study_name("/etc")
    assert STUDY_NAME_RULE in str(e.value)


@pytest.mark.parametrize("name", ["{victim}", ".", "..", "a/b", "../victim"])
@pytest.mark.parametrize("kind", ["final", "variables", "memory"])
def test_reports_refuse_an_old_study_with_an_unsafe_name(site, tmp_path, capsys, name, kind):
    """Studies created before names were checked: the report refuses, deletes nothing."""
    name = name.format(victim=site["victim"])
    url = f"sqlite:///{tmp_path}/old.db"
    optuna.create_study(storage=url, study_name=name)
    out = tmp_path / "reports"
    (out / "keep").mkdir(parents=True)
    (out / "keep" / "index.html").write_text("another report")
    before = snapshot(site["dir"], tmp_path)
    args = (["report", kind, name] if kind != "memory"
            else ["report", "memory", "--study-name", name])
    assert main([*args, "--storage", url, "--out", str(out)]) == 2
    assert "invalid study name" in one_line_error(capsys)
    assert snapshot(site["dir"], tmp_path) == before


def test_a_symlinked_study_folder_is_refused(site, tmp_path, capsys):
    out = tmp_path / "reports"
    out.mkdir()
    (out / "tiny").symlink_to(site["victim"], target_is_directory=True)
    before = snapshot(site["dir"], tmp_path)
    assert main(["report", "final", "tiny", "--storage", site["url"], "--out", str(out)]) == 2
    assert "symbolic link" in one_line_error(capsys)
    assert snapshot(site["dir"], tmp_path) == before


def _bad_option_cases() -> list:
    return [
        (["report", "final", "tiny", "--num-models", "0"],
         "invalid num_models=0: must be a finite int in [1, 100]"),
        (["report", "final", "tiny", "--num-models", "-1"], "invalid num_models=-1"),
        (["report", "memory", "ann", "--data", "{data}", "--sequence-lengths", ""],
         "invalid sequence_lengths=[]: must be a non-empty list of a finite int in [1, 366]"),
        (["report", "memory", "ann", "--data", "{data}", "--sequence-lengths", "0,1"],
         "invalid sequence_lengths=[0, 1]"),
        (["report", "memory", "ann", "--data", "{data}", "--num-models", "0"],
         "invalid num_models=0"),
        (["report", "memory", "ann", "--data", "{data}", "--n-jobs", "0"], "invalid n_jobs=0"),
        (["report", "memory", "ann", "--data", "{data}", "--max-epochs", "0"],
         "invalid max_epochs=0"),
        (["report", "variables", "noeval"], "no held-out years"),
        (["report", "variables", "tiny", "--lags", "abc"],
         "invalid lags='abc': must be A..B (0 <= A <= B) or a comma list"),
        (["report", "variables", "tiny", "--lags", "3..1"], "invalid lags='3..1'"),
        (["report", "variables", "tiny", "--lags=-2..1"], "invalid lags="),
        (["report", "variables", "tiny", "--lags", "0..5"], "outside the model's window"),
        (["report", "final", "noeval"], "no held-out years"),
        # no study to take parameters from: say how to give them
        (["report", "memory", "ann", "--data", "{data}"], "pass --params"),
        (["report", "memory"], "pass FAMILY"),
        (["report", "memory", "--study-name", "tiyn"], "closest: tiny"),
        (["report", "memory", "lstm", "--study-name", "tiny"], "is a ann study, not lstm"),
        (["report", "memory", "--study-name", "tiny", "--columns", "TA"], "drop --columns"),
    ]


@pytest.mark.parametrize(("args", "message"), _bad_option_cases())
def test_bad_report_options_fail_before_any_work(site, tmp_path, capsys, args, message):
    args = [a.format(data=site["data"]) for a in args]
    out = tmp_path / "reports"
    names = optuna.get_all_study_names(site["url"])
    before = snapshot(site["dir"], tmp_path)
    assert main([*args, "--storage", site["url"], "--out", str(out)]) == 2
    assert message in one_line_error(capsys)
    assert snapshot(site["dir"], tmp_path) == before  # no folder, the database untouched
    assert optuna.get_all_study_names(site["url"]) == names  # no memory study created


def _bad_outs(tmp_path: Path) -> list[tuple[Path, str]]:
    f = tmp_path / "a-file"
    f.write_text("x")
    cases = [(f, "is not a folder"), (f / "sub", "is not a folder")]
    if Path("/proc/self").exists():
        cases.append((Path("/proc/dlfm_auto_reports"), "cannot write to"))
    ro = tmp_path / "read-only"
    ro.mkdir()
    ro.chmod(0o555)
    if os.geteuid() != 0:  # root writes into a 0555 folder anyway
        cases.append((ro / "reports", "cannot write to"))
    return cases


@pytest.mark.parametrize("kind", ["final", "variables", "memory"])
def test_an_impossible_out_fails_before_the_work(site, tmp_path, capsys, kind):
    for out, message in _bad_outs(tmp_path):
        before = snapshot(site["dir"], tmp_path)
        args = {"final": ["report", "final", "tiny"],
                "variables": ["report", "variables", "tiny"],
                "memory": ["report", "memory", "--study-name", "tiny"]}[kind]
        assert main([*args, "--storage", site["url"], "--out", str(out)]) == 2, out
        assert message in one_line_error(capsys), out
        assert snapshot(site["dir"], tmp_path) == before


def test_final_report_replaces_only_its_own_folder_with_normal_modes(site, tmp_path, capsys):
    out = tmp_path / "reports"
    mine = out / "tiny"
    (mine / "variables").mkdir(parents=True)
    (mine / "variables" / "index.html").write_text("the variables report")
    (mine / "notes.txt").write_text("the user's notes")
    (mine / ".final.tmp-4194399-dead").mkdir()  # left by a killed report (no such pid)
    (out / "other-study").mkdir()
    (out / "other-study" / "x").write_text("x")
    others = snapshot(out / "other-study", mine / "variables")
    with umask(0o027):
        assert main(["report", "final", "tiny", "--num-models", "1", "--storage", site["url"],
                     "--out", str(out)]) == 0
    final = mine / "final"
    assert f"{final}/" in capsys.readouterr().out
    for f in ("index.html", "report.md", "metrics.json", "timeseries.png"):
        assert (final / f).stat().st_size > 100, f
        assert stat.S_IMODE((final / f).stat().st_mode) == 0o640
    assert stat.S_IMODE(final.stat().st_mode) == 0o750  # the umask, not tempfile's 0700
    assert snapshot(out / "other-study", mine / "variables") == others
    assert (mine / "notes.txt").read_text() == "the user's notes"
    index = (mine / "index.html").read_text()  # README: reports/<study>/index.html
    assert "final/index.html" in index and "variables/index.html" in index
    json.loads((final / "metrics.json").read_text(),
               parse_constant=lambda c: pytest.fail(f"bare {c} in metrics.json"))
    # a re-run replaces final/ (a stale file goes), and nothing else; no temp folders left
    (final / "stale.txt").write_text("x")
    with umask(0o022):
        assert main(["report", "final", "tiny", "--num-models", "1", "--storage", site["url"],
                     "--out", str(out)]) == 0
    assert not (final / "stale.txt").exists()
    assert sorted(p.name for p in mine.iterdir()) == ["final", "index.html", "notes.txt",
                                                      "variables"]
    assert sorted(p.name for p in out.iterdir()) == ["other-study", "tiny"]
    assert stat.S_IMODE(final.stat().st_mode) == 0o755
    # the variables report, in turn, replaces only variables/
    finals = snapshot(final)
    assert main(["report", "variables", "tiny", "--storage", site["url"], "--out", str(out)]) == 0
    assert snapshot(final) == finals
    assert (mine / "variables" / "heatmap.png").exists()
    assert not (mine / "variables" / "index.html").read_text().startswith("the variables")


def test_memory_report_takes_a_study_name(site, tmp_path, capsys):
    out = tmp_path / "reports"
    (out / "tiny" / "final").mkdir(parents=True)
    (out / "tiny" / "final" / "index.html").write_text("the final report")
    assert main(["report", "memory", "--study-name", "tiny", "--sequence-lengths", "1,2",
                 "--num-models", "1", "--max-epochs", "2", "--storage", site["url"],
                 "--out", str(out)]) == 0
    m = json.loads((out / "tiny" / "memory" / "metrics.json").read_text())
    assert m["family"] == "ann" and m["lengths"] == [1, 2]
    best = optuna.load_study(study_name="tiny", storage=site["url"]).best_trial
    assert {k: v for k, v in m["params"].items() if k != "feed"} == {
        k: v for k, v in best.params.items() if k not in ("feed", "sequence_length")}
    assert (out / "tiny" / "final" / "index.html").read_text() == "the final report"
    index = (out / "tiny" / "index.html").read_text()
    assert "memory/index.html" in index and "final/index.html" in index


def test_json_has_no_bare_nan(tmp_path):
    import numpy as np

    write_json(tmp_path / "m.json", {"a": float("nan"), "b": [np.float64("inf"), 1.5],
                                     "c": np.array([np.nan, 2.0])})
    text = (tmp_path / "m.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [None, 1.5], "c": [None, 2.0]}


def _busy_port() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


@pytest.mark.parametrize("port", ["busy", "99999", "0", "-1"])
def test_dashboard_refuses_a_busy_or_invalid_port_before_printing(site, capsys, port):
    busy = _busy_port() if port == "busy" else None
    try:
        p = str(busy.getsockname()[1]) if busy else port
        assert main(["dashboard", "--storage", site["url"], "--port", p]) == 2
    finally:
        if busy:
            busy.close()
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing printed ("Listening on ...") before the error
    err = captured.err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert ("cannot listen on" if port == "busy" else "invalid port=") in err


def test_memory_report_with_another_num_models_reuses_its_units(site, tmp_path, capsys):
    """--num-models 1, then 2 (only the new seed trains), then 1 again (nothing trains): the
    seed used to be a choice list of num_models, and another count crashed in Optuna."""
    from dlfm_auto.study._memory_units import MEMORY_ATTR

    out = tmp_path / "reports"
    args = ["report", "memory", "--study-name", "tiny", "--sequence-lengths", "1,2",
            "--max-epochs", "2", "--storage", site["url"], "--out", str(out)]

    def units() -> list:
        s = optuna.get_all_study_summaries(site["url"])
        name = next(x.study_name for x in s if x.study_name.startswith("memory-"))
        study = optuna.load_study(study_name=name, storage=site["url"])
        assert MEMORY_ATTR in study.user_attrs
        return [(t.params["sequence_length"], t.params["seed"]) for t in study.trials
                if t.state == optuna.trial.TrialState.COMPLETE]

    assert main([*args, "--num-models", "1"]) == 0
    assert sorted(units()) == [(1, 0), (2, 0)]
    assert main([*args, "--num-models", "2"]) == 0
    assert sorted(units()) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert main([*args, "--num-models", "1"]) == 0, capsys.readouterr().err
    assert len(units()) == 4  # nothing new trained
    m = json.loads((out / "tiny" / "memory" / "metrics.json").read_text())
    assert m["num_models"] == 1
