"""What the readers accept, what they refuse (one line, exit 2, nothing touched), and the
DLFM rules of the daily table, each with a known answer."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest
from conftest import PUE, UMB, needs_shared, simple_site, write_flux_csv

from dlfm_auto import UserError
from dlfm_auto.cli import main
from dlfm_auto.data import PrepareConfig, load_daily
from dlfm_auto.data._daily import _scaled

BASE = dict(target="NEE", columns=("TA",))


def snapshot(folder) -> dict:
    """Every file under ``folder`` with its size and mtime: 'nothing changed' is comparable."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def assert_refused(capsys, argv: list[str], folder, *needles: str) -> str:
    before = snapshot(folder)
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for n in needles:
        assert n in lines[0], lines[0]
    assert "np.int64" not in lines[0] and "np.float64" not in lines[0]
    assert snapshot(folder) == before
    return lines[0]


def site_text(tmp_path, days: int = 3 * 365, **kw) -> str:
    return write_flux_csv(tmp_path / "base.csv", simple_site(days=days, **kw)).read_text()


def data_lines(text: str) -> tuple[list[str], list[str]]:
    """(lines up to and including the header, data lines) of an AmeriFlux BASE text."""
    lines = text.splitlines()
    h = next(i for i, ln in enumerate(lines) if ln.startswith("TIMESTAMP_START"))
    return lines[: h + 1], lines[h + 1 :]


def set_cell(line: str, col: int, value: str) -> str:
    parts = line.split(",")
    parts[col] = value
    return ",".join(parts)


# ---------------------------------------------------------------- refused, by category

def _bad_stamp(value):
    def make(head, rows):
        rows[100] = set_cell(rows[100], 0, value)
        return head, rows
    return make


def _dup_conflict(head, rows):
    rows.insert(201, set_cell(rows[200], 3, "99"))  # same stamp, other TA
    return head, rows


def _mostly_text(head, rows):
    return head, [set_cell(r, 3, "n/a") if r else r for r in rows]


def _year_typo_past(head, rows):
    rows.append(set_cell(rows[-2], 0, "190706151200"))
    return head, rows


def _year_typo_near(head, rows):
    rows.append(set_cell(rows[-2], 0, "201306151200"))  # ~2 years after a 2010-2011 record
    return head, rows


def _repeated_used_column(head, rows):
    head[-1] += ",TA"
    return head, [r + ",1.0" if r else r for r in rows]


BAD_FILES = {
    "hhmm-2400": (_bad_stamp("201001012400"), ["data row 101", "hour 24"]),
    "month-13": (_bad_stamp("201013011200"), ["data row 101", "month 13"]),
    "feb-30": (_bad_stamp("201002301200"), ["day 30"]),
    "text-stamp": (_bad_stamp("noon"), ["data row 101", "noon"]),
    "conflicting-duplicate": (_dup_conflict, ["appears more than once", "1 such timestamp"]),
    "year-typo-future": (_bad_stamp("290906151200"), ["2909-06-15 12:00", "in the future"]),
    "year-typo-past": (_year_typo_past, ["1907-06-15 12:00", "years from the rest"]),
    "year-typo-near": (_year_typo_near, ["2013-06-15 12:00", "2 years from the rest",
                                         "2010-01-01 .. 2011-02-04"]),
    "mostly-text-column": (_mostly_text, ["column TA is mostly text", "'n/a'"]),
    "repeated-used-column": (_repeated_used_column, ["column TA appears 2 times"]),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_is_refused_with_one_line(tmp_path, capsys, case):
    make, needles = BAD_FILES[case]
    head, rows = data_lines(site_text(tmp_path, days=400))
    head, rows = make(head, rows)
    p = tmp_path / "bad.csv"
    p.write_text("\r\n".join(head + rows))
    assert_refused(capsys, ["prepare", "--data", str(p), "--target", "NEE", "--columns", "TA"],
                   tmp_path, *needles)


def _dd_frame(days: int = 3 * 365, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    idx = pd.date_range("2001-01-01", periods=days, freq="D")
    doy = idx.day_of_year.to_numpy()
    ta = 12 + 8 * np.sin(2 * np.pi * (doy - 110) / 365) + rng.normal(0, 1, days)
    sw = 200 + 100 * np.sin(2 * np.pi * (doy - 80) / 365)
    return pd.DataFrame({"TIMESTAMP": idx.strftime("%Y%m%d"), "TA_F": ta, "SW_IN_F": sw,
                         "NEE_VUT_REF": -0.1 * sw / 20 + 0.2 * ta,
                         "NEE_VUT_REF_QC": np.ones(days)})


@pytest.mark.parametrize(("case", "needles"), [
    ("impossible-date", ["day 30", "20010230"]),
    ("duplicated-date", ["2001-03-01", "appears more than once"]),
])
def test_bad_daily_file_is_refused(tmp_path, capsys, case, needles):
    df = _dd_frame()
    if case == "impossible-date":
        df.loc[40, "TIMESTAMP"] = "20010230"
    else:
        extra = df.iloc[[59]].copy()
        extra["TA_F"] += 1
        df = pd.concat([df.iloc[:60], extra, df.iloc[60:]])
    p = tmp_path / "FLX_XX-Tst_DD.csv"
    df.to_csv(p, index=False)
    assert_refused(capsys, ["prepare", "--data", str(p)], tmp_path, *needles)


@pytest.mark.parametrize(("args", "needles"), [
    (["--columns", "TIMESTAMP_END"], ["TIMESTAMP_END is a timestamp column", "an input"]),
    (["--target", "TIMESTAMP_START"], ["TIMESTAMP_START is a timestamp column", "the target"]),
    (["--ustar-threshold", "nan"], ["ustar_threshold=nan", "finite"]),
    (["--ustar-threshold", "inf"], ["ustar_threshold=inf", "finite"]),
    (["--dd-qc-min", "2"], ["dd_qc_min=2.0", "[0, 1]"]),
])
def test_bad_option_is_refused(tmp_path, capsys, site_file, args, needles):
    assert_refused(capsys, ["prepare", "--data", str(site_file), *args], tmp_path, *needles)


@pytest.mark.parametrize("verb", ["prepare", "demo-data"])
@pytest.mark.parametrize("where", ["directory", "under-a-file"])
def test_out_that_cannot_be_a_file_is_refused_before_work(tmp_path, capsys, site_file, verb,
                                                          where):
    folder = tmp_path / "keep"
    folder.mkdir()
    (folder / "precious.txt").write_text("do not delete")
    out = folder if where == "directory" else folder / "precious.txt" / "daily.csv"
    argv = [verb, "--out", str(out)] + (["--data", str(site_file)] if verb == "prepare" else [])
    line = assert_refused(capsys, argv, tmp_path,
                          "is a directory" if where == "directory" else "is not a directory")
    assert "--out" in line
    assert (folder / "precious.txt").read_text() == "do not delete"


def test_no_valid_nee_message_does_not_send_prepare_to_prepare(tmp_path, capsys, site_file):
    line = assert_refused(capsys, ["prepare", "--data", str(site_file), "--ustar-threshold", "5"],
                          tmp_path, "USTAR rule")
    assert "see `prepare`" not in line


def test_numpy_scalars_in_settings_are_plain_in_messages():
    with pytest.raises(UserError) as e:
        PrepareConfig(sequence_length=np.int64(0))
    assert "sequence_length=0:" in str(e.value) and "np." not in str(e.value)
    assert PrepareConfig(sequence_length=np.int64(7)).sequence_length == 7


# ---------------------------------------------------------------- accepted variants


def _table(path, **kw):
    return load_daily(PrepareConfig(data=str(path), **{**BASE, **kw}))


@pytest.fixture
def plain(tmp_path):
    text = site_text(tmp_path)
    table, rep, _ = _table(tmp_path / "base.csv")
    return text, table, rep


@pytest.mark.parametrize("variant", ["bom", "latin1-unused-column", "comma-space", "semicolon",
                                     "tab", "gzip"])
def test_format_variants_read_the_same_table(tmp_path, plain, variant):
    text, ref, _ = plain
    head, rows = data_lines(text)
    p = tmp_path / "v.csv"
    if variant == "bom":
        p.write_bytes(b"\xef\xbb\xbf" + text.encode())
    elif variant == "latin1-unused-column":  # and a repeated unused name: harmless
        head[-1] += ",COMMENT,COMMENT"
        rows = [r + (",caf\xe9,x" if r else "") for r in rows]
        p.write_bytes("\r\n".join(head + rows).encode("latin-1"))
    elif variant == "comma-space":
        p.write_text("\r\n".join(ln.replace(",", ", ") for ln in head + rows))
    elif variant in ("semicolon", "tab"):
        sep = ";" if variant == "semicolon" else "\t"
        p.write_text("\r\n".join(ln.replace(",", sep) for ln in head + rows))
    else:
        p = tmp_path / "v.csv.gz"
        p.write_bytes(gzip.compress(text.encode()))
    table, _, _ = _table(p)
    pd.testing.assert_frame_equal(table, ref)


def test_identical_duplicates_dropped_with_a_note(tmp_path, plain):
    text, ref, ref_rep = plain
    head, rows = data_lines(text)
    rows = rows[:500] + rows[300:500] + rows[500:]  # 200 records twice
    p = tmp_path / "d.csv"
    p.write_text("\r\n".join(head + rows))
    table, rep, _ = _table(p)
    pd.testing.assert_frame_equal(table, ref)
    assert any("200 duplicated record(s)" in n for n in rep.notes)
    assert rep.rows_read == ref_rep.rows_read


def test_text_cells_and_absurd_values_become_missing_and_are_counted(tmp_path, plain):
    text, ref, _ = plain
    head, rows = data_lines(text)
    rows[1000] = set_cell(rows[1000], 3, "n/a")
    rows[1001] = set_cell(rows[1001], 3, "?")
    rows[2000] = set_cell(rows[2000], 3, "1e6")
    rows[2001] = set_cell(rows[2001], 2, "-500")  # NEE
    p = tmp_path / "t.csv"
    p.write_text("\r\n".join(head + rows))
    table, rep, _ = _table(p)
    assert rep.non_numeric_by_column == {"TA": 2}
    assert rep.implausible_by_column == {"TA": 1, "NEE": 1}
    text_out = "\n".join(rep.lines())
    assert "text cells read as missing: 2 in TA" in text_out
    assert "set missing: 1 records of TA" in text_out
    # same answer as writing those cells as missing in the first place
    for i, c in ((1000, 3), (1001, 3), (2000, 3), (2001, 2)):
        rows[i] = set_cell(rows[i], c, "-9999")
    p2 = tmp_path / "t2.csv"
    p2.write_text("\r\n".join(head + rows))
    pd.testing.assert_frame_equal(table, _table(p2)[0])


@pytest.mark.parametrize(("column", "value", "counted"), [
    ("TA_1_1_1", 1e6, True), ("TA_1_1_1", 35.0, False), ("SW_IN_F", -400.0, True),
    ("VPD_PI", 130.0, True), ("USTAR", -1.0, True), ("FC", 300.0, True), ("NEE_QC", 7.0, True),
    ("PPFD_IN", 2500.0, False), ("XYZ", 1e9, False),
])
def test_plausibility_table_by_family(column, value, counted):
    from dlfm_auto.data._ranges import mask_implausible

    v = np.array([value, 1.0])
    n = mask_implausible({column: v})
    assert (n == {column: 1}) == counted
    assert bool(np.isnan(v[0])) == counted


# ---------------------------------------------------------------- changing time step


def test_time_step_that_changes_mid_file_uses_each_days_step(tmp_path):
    half = simple_site(days=2 * 365)
    hourly = simple_site(days=2 * 365, seed=1, start="2012-01-01")
    hourly = hourly[hourly.index.minute == 0]
    df = pd.concat([half, hourly])
    # four probe days: valid daylight TA records just below / at each step's minimum
    light = df["PPFD_IN"] > 4
    probes = {"2010-06-10": 8, "2010-06-11": 9, "2012-06-10": 4, "2012-06-11": 5}
    for day, k in probes.items():
        on = (df.index.floor("D") == pd.Timestamp(day)) & light
        df.loc[on[on].index[k:], "TA"] = np.nan
    p = write_flux_csv(tmp_path / "switch.csv", df)
    table, rep, src = _table(p, interpolate_single_gaps=False)
    assert src.step_minutes == 30
    assert any("time step changes" in n and "60-min" in n for n in rep.notes)
    # known answer, computed independently: per day, valid daylight counts vs each step's rule
    d = df[light].copy()
    d["step"] = np.where(d.index < pd.Timestamp("2012-01-01"), 30, 60)
    g = d.groupby(d.index.floor("D"))
    need = g["step"].first().map(lambda s: _scaled(9, s))
    kept = g["TA"].count() >= need
    assert rep.days_kept == int(kept.sum())
    assert set(table.index) == set(kept[kept].index)
    for day, k in probes.items():
        assert (pd.Timestamp(day) in table.index) is (k in (9, 5)), day
    nee_ok = g["NEE"].count() >= need
    assert table["NEE"].notna().sum() == int((kept & nee_ok).sum())


# ---------------------------------------------------------------- FLUXNET daily files


def test_dd_qc_rule_known_answer(tmp_path):
    df = _dd_frame()
    low = [10, 20, 30, 400, 800]
    df.loc[low, "NEE_VUT_REF_QC"] = 0.25
    df.loc[[11], "NEE_VUT_REF_QC"] = 0.5  # exactly the threshold: kept
    p = tmp_path / "FLX_XX-Tst_DD.csv"
    df.fillna(-9999).to_csv(p, index=False)
    table, rep, src = load_daily(PrepareConfig(data=str(p)))
    assert src.target == "NEE_VUT_REF" and src.target_units == "gC m-2 d-1"
    assert rep.nee_missing_qc == len(low)
    assert table["NEE"].isna().sum() == len(low)
    assert table["NEE"].iloc[low].isna().all() and np.isfinite(table["NEE"].iloc[11])
    assert f"  NEE missing (NEE_VUT_REF_QC < 0.5): {len(low)}" in rep.lines()
    _, rep0, _ = load_daily(PrepareConfig(data=str(p), dd_qc_min=0.0))
    assert rep0.nee_missing_qc == 0


@needs_shared
def test_dd_qc_counts_on_fr_pue():
    table, rep, src = load_daily(PrepareConfig(data=str(PUE)))
    raw = pd.read_csv(PUE, na_values=["-9999"])
    raw = raw.set_index(pd.to_datetime(raw["TIMESTAMP"].astype(str).str.replace("-", ""),
                                        format="%Y%m%d"))
    kept = raw[list(src.inputs)].notna().all(axis=1)
    removed = kept & raw["NEE_VUT_REF"].notna() & (raw["NEE_VUT_REF_QC"] < 0.5)
    assert rep.nee_missing_qc == int(removed.sum()) > 100
    assert table["NEE"].notna().sum() == int((kept & raw["NEE_VUT_REF"].notna()).sum()
                                             - removed.sum())
    assert src.target_units == "gC m-2 d-1"
    assert load_daily(PrepareConfig(data=str(UMB), target="NEE", columns=("TA",)))[2] \
        .target_units == "µmol m-2 s-1"


# ---------------------------------------------------------------- DLFM rules


def test_peak_mode_uses_dlfm_hours_0900_to_1130(tmp_path):
    df = simple_site(days=3 * 365)
    hhmm = df.index.hour * 100 + df.index.minute
    df["NEE"] = np.where((hhmm >= 900) & (hhmm < 1100), 1.0, 5.0)
    df.loc[(hhmm >= 1100) & (hhmm < 1200), "NEE"] = 3.0
    p = write_flux_csv(tmp_path / "pk.csv", df)
    table, _, _ = _table(p, nee_mode="peak", ustar_mode="off")
    nee = table["NEE"].dropna()
    # 4 records of 1 and 2 of 3: DLFM's hours 9, 10 and 11
    np.testing.assert_allclose(nee.to_numpy(), (4 * 1.0 + 2 * 3.0) / 6)


def test_ustar_drop_record_drops_drivers_too(tmp_path):
    df = simple_site(days=3 * 365)
    calm = (df.index.hour == 12) & (df.index.minute == 0)
    df.loc[calm, "USTAR"] = 0.1
    df.loc[calm, "TA"] = 45.0  # marks the calm records
    p = write_flux_csv(tmp_path / "u.csv", df)
    rec_tab, rep, _ = _table(p, ustar_mode="drop-record")
    nee_tab, _, _ = _table(p, ustar_mode="drop")
    light = df["PPFD_IN"] > 4
    keep = light & ~calm
    expect = df.loc[keep, "TA"].groupby(df.index[keep].floor("D")).mean()
    np.testing.assert_allclose(rec_tab["TA"].to_numpy(), expect.loc[rec_tab.index].to_numpy())
    assert (nee_tab["TA"] > rec_tab["TA"].reindex(nee_tab.index)).mean() > 0.9
    assert rep.ustar_records_dropped == int((light & calm).sum())
    assert "drivers too" in rep.ustar_rule


def test_dlfm_snow_season_years(tmp_path):
    df = simple_site(days=4 * 365)
    df["D_SNOW"] = 0.0
    day = df.index.floor("D")
    df.loc[(day >= "2011-01-01") & (day <= "2011-03-20"), "D_SNOW"] = 10.0  # day and night
    night = df["PPFD_IN"] <= 4
    df.loc[(day >= "2012-01-01") & (day <= "2012-04-05") & night, "D_SNOW"] = 5.0  # night only
    p = write_flux_csv(tmp_path / "s.csv", df)
    dl, rep, _ = _table(p, snow_season="dlfm")
    sy = dl["SEASON_YEAR"]
    assert "DLFM" in rep.season_rule and not any("SNOW" in c for c in dl.columns)
    assert (sy.loc[:"2011-03-20"] == 2010).all()  # first year: no snow, one label before July
    assert sy.loc["2011-03-21"] == 2011
    # 2012: snow only at night -> daylight mean 0 -> a snow-free spring: starts in July
    assert sy.loc["2012-06-30"] == 2011 and sy.loc["2012-07-01"] == 2011
    assert sy.loc["2012-07-02"] == 2012
    assert sy.loc["2013-07-01"] == 2012 and sy.loc["2013-07-02"] == 2013
    anyrec, rep2, _ = _table(p)
    assert anyrec["SEASON_YEAR"].loc["2012-04-05"] == 2011
    assert anyrec["SEASON_YEAR"].loc["2012-04-06"] == 2012
    assert anyrec["SEASON_YEAR"].loc["2010-06-01"] == 2010


def test_new_settings_keep_old_study_identities():
    old = PrepareConfig().settings()
    assert "snow_season" not in old and "dd_qc_min" not in old
    assert PrepareConfig(snow_season="dlfm").settings()["snow_season"] == "dlfm"
    assert PrepareConfig(dd_qc_min=0.7).settings()["dd_qc_min"] == 0.7
    assert PrepareConfig(**old) == PrepareConfig()


def test_utf16_file_names_the_encoding(tmp_path, capsys):
    p = tmp_path / "u16.csv"
    p.write_bytes(site_text(tmp_path, days=30).encode("utf-16"))
    assert_refused(capsys, ["prepare", "--data", str(p)], tmp_path, "UTF-16", "UTF-8")


def test_a_text_cell_late_in_a_long_file_raises_no_python_warning(tmp_path):
    import warnings

    head, rows = data_lines(site_text(tmp_path, days=4 * 365))
    rows[-100] = set_cell(rows[-100], 3, "n/a")  # past pandas' first parsing chunk
    p = tmp_path / "late.csv"
    p.write_text("\n".join(head + rows))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, rep, _ = _table(p)
    assert rep.non_numeric_by_column == {"TA": 1}


def test_a_long_gap_between_large_blocks_is_accepted(tmp_path):
    df = pd.concat([simple_site(days=2 * 365), simple_site(days=2 * 365, start="2015-01-01")])
    p = write_flux_csv(tmp_path / "gap.csv", df)
    table, _, _ = _table(p)
    assert sorted(set(table.index.year)) == [2010, 2011, 2015, 2016]


def test_outputs_never_replace_the_users_data(tmp_path, capsys, site_file):
    real = tmp_path / "data.csv"
    real.write_text(site_file.read_text())
    assert_refused(capsys, ["demo-data", "--out", str(real)], tmp_path, "not a demo file")
    assert_refused(capsys, ["prepare", "--data", str(real), "--out", str(real)], tmp_path,
                   "the data file itself")
    demo = tmp_path / "demo.csv.gz"
    assert main(["demo-data", "--out", str(demo), "--years", "3"]) == 0
    assert main(["demo-data", "--out", str(demo), "--years", "3", "--seed", "2"]) == 0  # a demo
