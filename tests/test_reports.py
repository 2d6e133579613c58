"""Real observation reports: BUFR (SYNOP, TEMP, aircraft), ODB-2, station CSV -> the observation contract."""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from daflow.io.bufr import pressure_of_flight_level, read_bufr, specific_humidity_from_dewpoint


@pytest.fixture(scope="module")
def synop(sample_data):
    return read_bufr(sample_data / "obs" / "synop-2018112012-europe.bufr")


def test_synop_matches_pdbufr(sample_data, synop):
    """Every 2 m temperature, position and pressure equals what pdbufr (an independent reader) returns."""
    pdbufr = pytest.importorskip("pdbufr")
    ref = pdbufr.read_bufr(sample_data / "obs" / "synop-2018112012-europe.bufr",
                           columns=("WMO_station_id", "latitude", "longitude", "airTemperatureAt2M", "pressureReducedToMeanSeaLevel"),
                           required_columns=("WMO_station_id", "latitude"))
    t2m = synop["variable"] == "t2m"
    ours = {(s, round(la, 3)): v for s, la, v in zip(synop["station"][t2m], synop["lat"][t2m], synop["value"][t2m])}
    assert len(ref) == 1507 and len(ours) == len(ref)
    for _, row in ref.iterrows():
        mine = ours[(f"{int(row.WMO_station_id):05d}", round(row.latitude, 3))]
        assert (np.isnan(mine) and np.isnan(row.airTemperatureAt2M)) or mine == pytest.approx(row.airTemperatureAt2M)
    msl = synop["value"][synop["variable"] == "msl"]
    assert np.isfinite(msl).sum() == ref.pressureReducedToMeanSeaLevel.notna().sum()


def test_synop_wind_components(synop):
    """u = -s sin(d), v = -s cos(d): a wind from the north (360 deg) blows southward (v < 0)."""
    u, v = (synop["value"][synop["variable"] == n] for n in ("u10", "v10"))
    speed = np.hypot(u, v)
    ok = np.isfinite(speed)
    assert ok.sum() == 1471 and speed[ok].max() < 45
    from daflow.io.bufr import _wind
    assert np.allclose(_wind(np.array([360.0, 90.0, 225.0]), np.array([10.0, 5.0, np.sqrt(2)])),
                       ([0.0, -5.0, 1.0], [-10.0, 0.0, 1.0]), atol=1e-12)


def test_standard_atmosphere_and_humidity():
    """ICAO: 101325 Pa at 0 m, 22632 Pa at 11 km; q at Td = 273.15 K, p = 1000 hPa is 0.622*611.2/(1e5-0.378*611.2)."""
    assert pressure_of_flight_level(np.array([0.0, 11000.0]))[0] == pytest.approx(101325.0)
    assert pressure_of_flight_level(np.array([11000.0]))[0] == pytest.approx(22632.06, rel=1e-4)
    assert pressure_of_flight_level(np.array([5000.0]))[0] == pytest.approx(54019.9, rel=1e-4)  # ICAO table 540.2 hPa
    q = specific_humidity_from_dewpoint(np.array([273.15]), np.array([1e5]))[0]
    assert q == pytest.approx(0.622 * 611.2 / (1e5 - 0.378 * 611.2))


def test_ingest_cli_all_kinds(sample_data, daflow, tmp_path):
    obs = sample_data / "obs"
    for name in ("synop-2018112012-europe.bufr", "temp-2008120812-global.bufr", "aircraft-2021090915-spain.bufr",
                 "feedback-synop-2017041710.odb"):
        res = daflow("ingest", obs / name, "-o", tmp_path / f"{name}.nc", "--quiet")
        assert res.exit_code == 0, res.output
    d = xr.open_dataset(tmp_path / "synop-2018112012-europe.bufr.nc")
    assert d.attrs["daflow_kind"] == "observations"
    good = (d["variable"].values.astype(str) == "t2m") & (d["qc"].values == 0)
    assert good.sum() == 1471 and (d["time"].values[good] == np.datetime64("2018-11-20T12:00")).all()
    assert set(d["platform"].values.astype(str)) == {"synop"} and (d["error_std"].values[good] == 1.0).all()
    t = xr.open_dataset(tmp_path / "temp-2008120812-global.bufr.nc")
    good = (t["variable"].values.astype(str) == "t") & (t["qc"].values == 0)
    assert good.sum() > 3000 and t["pressure"].values[good].min() >= 100 and t["pressure"].values[good].max() < 110000
    first = t.isel(obs=np.flatnonzero((t["station"].values.astype(str) == "71907") & (t["variable"].values.astype(str) == "t"))[:2])
    assert first["pressure"].values.tolist() == [100300.0, 100000.0] and first["value"].values == pytest.approx([258.3, 259.7])
    a = xr.open_dataset(tmp_path / "aircraft-2021090915-spain.bufr.nc")
    good = (a["variable"].values.astype(str) == "t") & (a["qc"].values == 0)
    assert good.sum() == 186 and (a["pressure"].values[good] < 102000).all()
    o = xr.open_dataset(tmp_path / "feedback-synop-2017041710.odb.nc")
    assert o.sizes["obs"] == 13 and set(o["variable"].values.astype(str)) == {"sp", "rh2m"}
    assert "fg_depar" in o and "an_depar" in o


def test_truncated_and_foreign_bufr(sample_data, daflow, tmp_path):
    """A cut file keeps its complete messages (warning); a file of radiances only is exit 65 naming the category."""
    import eccodes

    raw = (sample_data / "obs" / "synop-2018112012-europe.bufr").read_bytes()
    (tmp_path / "cut.bufr").write_bytes(raw[:100_000])
    res = daflow("ingest", tmp_path / "cut.bufr", "-o", tmp_path / "cut.nc")
    assert res.exit_code == 0 and "truncated" in res.stderr
    with open(sample_data / "obs" / "synop-2018112012-europe.bufr", "rb") as f, open(tmp_path / "rad.bufr", "wb") as out:
        h = eccodes.codes_bufr_new_from_file(f)
        eccodes.codes_set(h, "dataCategory", 21)
        out.write(eccodes.codes_get_message(h))
        eccodes.codes_release(h)
    res = daflow("ingest", tmp_path / "rad.bufr", "-o", tmp_path / "rad.nc")
    assert res.exit_code == 65 and "data category 21 (satellite radiances)" in res.stderr
    assert not (tmp_path / "rad.nc").exists()
    (tmp_path / "empty.bufr").write_bytes(b"")
    assert daflow("ingest", tmp_path / "empty.bufr", "-o", tmp_path / "e.nc").exit_code == 65


def test_station_csv_blacklist_errors(daflow, tmp_path):
    (tmp_path / "obs.csv").write_text("station,lat,lon,elevation,time,variable,value\n"
                                      "07149,48.72,2.38,89,2018-11-20T12:00Z,t2m,280.5\n"
                                      "07149,48.72,2.38,89,2018-11-20T12:00Z,t2m,280.5\n"
                                      "10384,52.47,13.40,48,2018-11-20T12:00Z,t2m,275.0\n"
                                      "10385,95.0,13.40,48,2018-11-20T12:00Z,t2m,275.0\n"
                                      "10386,52.0,13.40,48,2018-11-20T18:00Z,u10,3.0\n")
    (tmp_path / "errors.toml").write_text("[synop]\nt2m = 1.7\n")
    (tmp_path / "black.txt").write_text("10384  # a roof station\n")
    res = daflow("ingest", tmp_path / "obs.csv", "-o", tmp_path / "obs.nc", "--obs-errors", tmp_path / "errors.toml",
                 "--blacklist", tmp_path / "black.txt", "--time", "2018-11-20T00:00/2018-11-20T12:00")
    assert res.exit_code == 0, res.output
    d = xr.open_dataset(tmp_path / "obs.nc")
    assert d["qc"].values.tolist() == [0, 2, 5, 4, 3]  # good, duplicate, blacklisted, |lat| > 90, outside --time
    assert d["error_std"].values[:4].tolist() == [1.7] * 4 and d["error_std"].values[4] == 2.0
    (tmp_path / "bad.csv").write_text("station,lat,lon,time,variable,value\n1,2,3,2018-11-20,t2m,280\n")
    res = daflow("ingest", tmp_path / "bad.csv", "-o", tmp_path / "bad.nc")
    assert res.exit_code == 65 and "missing column(s) elevation" in res.stderr
    (tmp_path / "when.csv").write_text("station,lat,lon,elevation,time,variable,value\n1,2,3,4,yesterday,t2m,280\n")
    res = daflow("ingest", tmp_path / "when.csv", "-o", tmp_path / "when.nc")
    assert res.exit_code == 65 and "unparseable time" in res.stderr
    (tmp_path / "nobody.txt").write_text("99999\n")
    res = daflow("ingest", tmp_path / "obs.csv", "-o", tmp_path / "x.nc", "--blacklist", tmp_path / "nobody.txt")
    assert res.exit_code == 65 and "names no station" in res.stderr and not (tmp_path / "x.nc").exists()


def test_withhold_by_station(sample_data, daflow, tmp_path):
    res = daflow("ingest", sample_data / "obs" / "synop-2018112012-europe.bufr", "-o", tmp_path / "a.nc",
                 "--withhold", "0.1", "--withheld", tmp_path / "w.nc", "--seed", "1", "--quiet")
    assert res.exit_code == 0, res.output
    a, w = xr.open_dataset(tmp_path / "a.nc"), xr.open_dataset(tmp_path / "w.nc")
    sa, sw = set(a["station"].values.astype(str)), set(w["station"].values.astype(str))
    assert not sa & sw and len(sw) == round(0.1 * len(sa | sw)) and a.sizes["obs"] + w.sizes["obs"] == 9042


def test_reduced_gaussian_grib_is_a_point_grid(sample_data, daflow, tmp_path):
    res = daflow("ingest", sample_data / "grib" / "ecmwf-2t-2018112012-n160.grib", "-o", tmp_path / "bg.nc")
    assert res.exit_code == 0, res.output
    d = xr.open_dataset(tmp_path / "bg.nc")
    assert d["t2m"].dims == ("time", "point") and d.sizes["point"] == 108160
    assert d["lat"].dims == ("point",) and d["time"].values[0] == np.datetime64("2018-11-20T12:00")
    assert 200 < float(d["t2m"].min()) and float(d["t2m"].max()) < 330


def test_message_spans_skip_headers_and_count_damage(sample_data):
    """Bulletin headers between messages are skipped; a cut last message is counted, not decoded."""
    from daflow.io.bufr import message_spans

    raw = (sample_data / "obs" / "synop-2018112012-europe.bufr").read_bytes()
    spans, damaged = message_spans(raw)
    assert len(spans) == 1507 and damaged == 0
    first = raw[spans[0][0]:spans[0][1]]
    data = b"ZCZC 001\r\r\nSMXX01 ECMF\r\r\n" + first + b"\r\r\nNNNN" + first + first[: len(first) // 2]
    spans, damaged = message_spans(data)
    assert [data[a:b] for a, b in spans] == [first, first] and damaged == 1


def test_learnt_layouts_decode_exactly_as_eccodes(sample_data, monkeypatch):
    """The bit-level fast path for single-report surface messages gives the same columns as ecCodes."""
    import daflow.io.bufr as bufr

    data = (sample_data / "obs" / "synop-2018112012-europe.bufr").read_bytes()
    spans, _ = bufr.message_spans(data)
    fast, _, decoded = bufr._decode(data, spans)
    monkeypatch.setattr(bufr, "_header", lambda *args: None)  # every message through ecCodes
    slow, _, _ = bufr._decode(data, spans)
    assert decoded == 1507
    for key, values in slow.items():
        if values.dtype == object or values.dtype.kind == "M":
            assert np.array_equal(fast[key], values), key
        else:
            assert np.array_equal(fast[key], values, equal_nan=True), key


def test_point_grid_is_refused_by_the_generative_model_in_one_line(sample_data, daflow, tmp_path):
    assert daflow("ingest", sample_data / "grib" / "ecmwf-2t-2018112012-n160.grib", "-o", tmp_path / "bg.nc").exit_code == 0
    res = daflow("train", "--data", tmp_path / "bg.nc", "--history", "1", "--epochs", "1", "-o", tmp_path / "model")
    assert res.exit_code == 65 and "point grid" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_damaged_odb_and_bufr_are_data_errors_without_output(sample_data, daflow, tmp_path):
    raw = (sample_data / "obs" / "feedback-synop-2017041710.odb").read_bytes()
    (tmp_path / "cut.odb").write_bytes(raw[:30000])
    res = daflow("ingest", tmp_path / "cut.odb", "-o", tmp_path / "cut.nc")
    assert res.exit_code == 65 and "cannot decode the ODB-2 file" in res.stderr and not (tmp_path / "cut.nc").exists()
    (tmp_path / "bad.bufr").write_bytes(b"BUFR\x00\x00\x10\x03garbage\x00\x01\x02")
    res = daflow("ingest", tmp_path / "bad.bufr", "-o", tmp_path / "bad.nc")
    assert res.exit_code == 65 and "no decodable BUFR report: 1 truncated or corrupted message" in res.stderr
    assert res.stderr.isprintable() or all(c.isprintable() or c.isspace() for c in res.stderr)


def _wigos_synop(eccodes, subsets: int, compressed: int, first: int = 0) -> bytes:
    """A WIGOS SYNOP message (301150 + 307080) encoded by ecCodes, one report per subset."""
    h = eccodes.codes_bufr_new_from_samples("BUFR4")
    for key, value in (("masterTablesVersionNumber", 36), ("dataCategory", 0), ("numberOfSubsets", subsets),
                       ("observedData", 1), ("compressedData", compressed)):
        eccodes.codes_set(h, key, value)
    eccodes.codes_set_array(h, "unexpandedDescriptors", [301150, 307080])
    idx = np.arange(first, first + subsets)
    for key, values in (("wigosIdentifierSeries", 0 * idx), ("wigosIssuerOfIdentifier", 20000 + 0 * idx),
                        ("wigosIssueNumber", 0 * idx), ("year", 2018 + 0 * idx), ("month", 11 + 0 * idx), ("day", 20 + 0 * idx),
                        ("hour", 12 + 0 * idx), ("minute", 0 * idx), ("latitude", 45.0 + idx / 10), ("longitude", 5.0 + idx / 10),
                        ("heightOfStationGroundAboveMeanSeaLevel", 10.0 * idx), ("airTemperature", 270.0 + idx / 10),
                        ("windDirection", (idx * 37) % 360), ("windSpeed", idx / 2), ("pressureReducedToMeanSeaLevel", 100000.0 + 10 * idx)):
        if subsets == 1:
            eccodes.codes_set(h, key, values[0].item())
        else:
            eccodes.codes_set_array(h, key, values.tolist())
    names = [f"STN{i}" for i in idx]
    if subsets == 1:
        eccodes.codes_set(h, "wigosLocalIdentifierCharacter", names[0])
    else:
        eccodes.codes_set_string_array(h, "wigosLocalIdentifierCharacter", names)
    eccodes.codes_set(h, "pack", 1)
    message = eccodes.codes_get_message(h)
    eccodes.codes_release(h)
    return message


@pytest.mark.parametrize("subsets,compressed", [(3, 0), (3, 1), (1, 0)])
def test_wigos_synop_templates(tmp_path, subsets, compressed):
    """WIGOS identifiers, compressed and uncompressed multi-subset and single-report messages (via the learnt layouts)."""
    eccodes = pytest.importorskip("eccodes")
    data = b"".join(_wigos_synop(eccodes, subsets, compressed, first=k * subsets) for k in range(12 // subsets))
    (tmp_path / "wigos.bufr").write_bytes(data)
    cols = read_bufr(tmp_path / "wigos.bufr")
    t = cols["variable"] == "t2m"
    idx = np.arange(12)
    assert cols["station"][t].tolist() == [f"0-20000-0-STN{i}" for i in idx]
    assert np.allclose(cols["value"][t], 270.0 + idx / 10) and np.allclose(cols["lat"][t], 45.0 + idx / 10)
    assert np.allclose(cols["elevation"][t], 10.0 * idx)
    assert (cols["time"][t] == np.datetime64("2018-11-20T12:00")).all()
    u = cols["value"][cols["variable"] == "u10"]
    assert np.allclose(u, -(idx / 2) * np.sin(np.radians((idx * 37) % 360)))
    assert np.allclose(cols["value"][cols["variable"] == "msl"], 100000.0 + 10 * idx)


def test_var_and_bbox_select_reports_and_rename_is_refused(daflow, tmp_path):
    """--var and --bbox were silently ignored for reports (every report written); --rename too."""
    (tmp_path / "obs.csv").write_text("station,lat,lon,elevation,time,variable,value\n"
                                      "1,48.7,2.4,89,2018-11-20T12:00Z,t2m,280.5\n"
                                      "2,52.5,13.4,48,2018-11-20T12:00Z,t2m,275.0\n"
                                      "2,52.5,13.4,48,2018-11-20T12:00Z,u10,3.0\n"
                                      "3,40.4,-3.7,667,2018-11-20T12:00Z,t2m,285.0\n")
    res = daflow("ingest", tmp_path / "obs.csv", "--var", "t2m", "--bbox", "-5,45,10,55", "-o", tmp_path / "o.nc")
    assert res.exit_code == 0, res.output
    d = xr.open_dataset(tmp_path / "o.nc")
    assert d["station"].values.astype(str).tolist() == ["1"] and d["variable"].values.astype(str).tolist() == ["t2m"]
    res = daflow("ingest", tmp_path / "obs.csv", "--var", "t", "-o", tmp_path / "t.nc")
    assert res.exit_code == 65 and "no report of t (the reports are of t2m, u10)" in res.stderr
    res = daflow("ingest", tmp_path / "obs.csv", "--bbox", "100,0,110,10", "-o", tmp_path / "b.nc")
    assert res.exit_code == 65 and "no report is of the variables and inside the box" in res.stderr
    res = daflow("ingest", tmp_path / "obs.csv", "--rename", "t2m=tas", "-o", tmp_path / "r.nc")
    assert res.exit_code == 2 and "--rename: applies to gridded states" in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.nc", "obs.csv"]
