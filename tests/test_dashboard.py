"""optuna-dashboard on a real study: its JSON API lists the study; chromium renders it."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from conftest import ROOT, simple_site, write_flux_csv

from dlfm_auto.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> bytes:
    req = urllib.request.Request(url, headers={"Accept-Encoding": "gzip, deflate"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.read()


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dash")
    site = write_flux_csv(tmp / "site.csv", simple_site(days=4 * 365))
    url = f"sqlite:///{tmp}/d.db"
    assert main(["run-study", "ann", "--data", str(site), "--target", "NEE", "--columns", "TA",
                 "PPFD_IN", "--eval-years", "1", "--folds", "2", "--n-trials", "3",
                 "--max-epochs", "3", "--storage", url, "--study-name", "dash", "--quiet"]) == 0
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "dlfm_auto", "dashboard", "--storage", url,
                             "--port", str(port)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            _get(base + "/api/studies")
            break
        except OSError:
            time.sleep(0.3)
    yield base, tmp
    proc.terminate()
    proc.wait(timeout=10)


def test_dashboard_api_lists_the_study(dashboard):
    base, _ = dashboard
    data = json.loads(_get(base + "/api/studies"))
    names = [s["study_name"] for s in data["study_summaries"]]
    assert "dash" in names


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_dashboard_renders_in_headless_chromium(dashboard):
    base, tmp = dashboard
    data = json.loads(_get(base + "/api/studies"))
    sid = next(s["study_id"] for s in data["study_summaries"] if s["study_name"] == "dash")
    shot = tmp / "dashboard.png"
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp / 'chrome'}", "--window-size=1280,900",
         "--virtual-time-budget=10000", f"--screenshot={shot}",
         f"{base}/dashboard/studies/{sid}"],
        capture_output=True, timeout=120, check=False,
    )
    assert shot.exists() and shot.stat().st_size > 10_000
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)
    # a rendered page, not a blank one: many distinct colours
    assert len(np.unique(img.reshape(-1, img.shape[-1]), axis=0)) > 50
