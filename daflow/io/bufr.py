"""WMO BUFR reports through ecCodes into the observation contract.

Each message is unpacked once and only the keys daflow maps are read, as whole arrays
(``codes_get_array``), instead of walking every key as pdbufr does. Single-report surface messages
(SYNOP, SHIP: thousands of small messages of a few templates) go faster still: the bit position,
width, scale and reference of each element are learnt from the first message of a template that
ecCodes decodes (:class:`_Layout`), and later messages with the same descriptors, length and
delayed replication factors are read from their bits directly, without ecCodes.

A message holds ``numberOfSubsets`` reports; in a compressed message a key yields one value per
subset (or one value shared by all), in an uncompressed one each subset follows the other.
Reports are recognised by their BUFR data category (WMO Manual on Codes, Table A):

- 0, 1 (surface land / sea: SYNOP, SHIP, classic and WIGOS templates): ``t2m``, ``d2m`` (K),
  ``u10``, ``v10`` from direction d and speed s, u = -s sin d, v = -s cos d (m/s), ``msl`` and
  ``sp`` (Pa);
- 2 (radiosonde/pilot TEMP profiles): per level ``t``, ``u``, ``v``, ``z`` (geopotential,
  m^2/s^2; a geopotential height H in gpm gives z = g0 H, g0 = 9.80665) and ``q`` (specific
  humidity from the dewpoint: e = 611.2 exp(17.67 (Td - 273.15) / (Td - 29.65)) Pa (Bolton 1980),
  q = 0.622 e / (p - 0.378 e)), with ``pressure`` (Pa);
- 4 (aircraft: AMDAR, ACARS, Mode-S): ``t``, ``u``, ``v``, ``q`` (from the mixing ratio r,
  q = r / (1 + r)), at the pressure of the report or of its flight level in the ICAO standard
  atmosphere, p = 101325 (1 - 2.25577e-5 h)^5.25588 Pa below 11 km,
  p = 22632.06 exp(-1.57688e-4 (h - 11000)) above.

Other categories (satellite soundings and radiances, radar, GNSS delays...) are not decoded:
they are counted and named, and a file with nothing else is a :class:`DataError`. A message that
ecCodes cannot expand (truncated, unknown local tables) is skipped and counted the same way.
"""
from __future__ import annotations

import os
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from daflow.errors import DaflowWarning, DataError

BUFR_MAGIC = b"BUFR"
G0 = 9.80665

CATEGORY_NAMES = {
    0: "surface land (SYNOP)", 1: "surface sea (SHIP)", 2: "vertical soundings (TEMP/PILOT)",
    3: "satellite vertical soundings", 4: "single-level upper air (aircraft)", 5: "satellite single-level upper air (AMV)",
    6: "radar", 7: "synoptic features", 8: "physical/chemical constituents", 12: "surface satellite data",
    21: "satellite radiances", 31: "oceanographic", 101: "image data",
}
PLATFORMS = {0: "synop", 1: "ship", 2: "temp", 4: "aircraft"}
# WMO Table B descriptors of the keys read from single-report messages (ecCodes' element names)
DESCRIPTORS = {
    "blockNumber": 1001, "stationNumber": 1002, "year": 4001, "month": 4002, "day": 4003, "hour": 4004,
    "minute": 4005, "second": 4006, "latitude": 5001, "latitudeCoarseAccuracy": 5002, "longitude": 6001,
    "longitudeCoarseAccuracy": 6002, "heightOfStation": 7001, "heightOfStationGroundAboveMeanSeaLevel": 7030,
    "pressure": 10004, "nonCoordinatePressure": 10004, "pressureReducedToMeanSeaLevel": 10051,
    "windDirectionAt10M": 11011, "windSpeedAt10M": 11012, "windDirection": 11001, "windSpeed": 11002,
    "airTemperature": (12101, 12001), "airTemperatureAt2M": 12004, "dewpointTemperature": (12103, 12003),
    "dewpointTemperatureAt2M": 12006, "wigosIdentifierSeries": 1125, "wigosIssuerOfIdentifier": 1126,
    "wigosIssueNumber": 1127, "flightLevel": 7010, "mixingRatio": 13002,
}


def is_bufr(path: str | os.PathLike) -> bool:
    """A BUFR message starts within the first 4 KiB (after a WMO bulletin header, if any)."""
    with open(path, "rb") as f:
        return BUFR_MAGIC in f.read(4096)


class _Message:
    """Array access to the keys of one unpacked message, ``n`` reports long."""

    def __init__(self, handle, eccodes):
        self.h, self.ec = handle, eccodes
        self.n = int(eccodes.codes_get(handle, "numberOfSubsets"))
        self.compressed = bool(eccodes.codes_get(handle, "compressedData"))
        self.first: dict[int, float] | None = None
        if self.n == 1:  # one report: all its values in two calls, by descriptor code
            values = eccodes.codes_get_array(handle, "numericValues")
            codes = eccodes.codes_get_array(handle, "expandedDescriptors")
            if len(values) == len(codes):
                unique, index = np.unique(codes, return_index=True)
                picked = values[index].astype(np.float64)
                picked[picked == eccodes.CODES_MISSING_DOUBLE] = np.nan
                self.first = dict(zip(unique.tolist(), picked.tolist()))

    def raw(self, key: str):
        ec = self.ec
        try:
            if ec.codes_get_native_type(self.h, key) is str:
                return np.asarray(ec.codes_get_string_array(self.h, key), dtype=object)
            return np.asarray(ec.codes_get_array(self.h, key))
        except ec.KeyValueNotFoundError:
            return None

    def numbers(self, key: str) -> np.ndarray | None:
        """All values of ``key`` as float, missing values as NaN."""
        a = self.raw(key)
        if a is None or a.dtype == object:
            return None
        out = a.astype(np.float64)
        out[(a == self.ec.CODES_MISSING_DOUBLE) | (a == self.ec.CODES_MISSING_LONG)] = np.nan
        return out

    def per_report(self, keys: tuple[str, ...], text: bool = False) -> np.ndarray:
        """The first occurrence of the first of ``keys`` present, one value per report."""
        if self.first is not None and not text and all(k in DESCRIPTORS for k in keys):
            for key in keys:
                for code in np.atleast_1d(DESCRIPTORS[key]).tolist():
                    if code in self.first:
                        return np.array([self.first[code]])
            return np.full(1, np.nan)
        for key in keys:
            if self.n == 1 or self.compressed:
                a = self.raw(f"#1#{key}")
            else:
                a = self.raw(key)
                if a is not None and len(a) != self.n:  # several occurrences per subset: ask each
                    a = np.array([self._first_of_subset(key, k) for k in range(1, self.n + 1)], dtype=a.dtype)
            if a is None:
                continue
            if len(a) == 1:
                a = np.repeat(a, self.n)
            if text:
                return np.array([str(s).strip() for s in a], dtype=object)
            out = a.astype(np.float64)
            out[(a == self.ec.CODES_MISSING_DOUBLE) | (a == self.ec.CODES_MISSING_LONG)] = np.nan
            return out
        return np.full(self.n, "" if text else np.nan, dtype=object if text else np.float64)

    def _first_of_subset(self, key: str, subset: int):
        value = self.raw(f"/subsetNumber={subset}/{key}")
        return value[0] if value is not None and len(value) else self.ec.CODES_MISSING_DOUBLE


def _times(m: _Message) -> np.ndarray:
    parts = [m.per_report((k,)) for k in ("year", "month", "day", "hour", "minute")]
    second = m.per_report(("second",))
    bad = np.isnan(np.stack(parts)).any(axis=0)
    out = np.full(m.n, np.datetime64("NaT"), dtype="datetime64[s]")
    for i in np.flatnonzero(~bad):
        y, mo, d, h, mi = (int(p[i]) for p in parts)
        try:
            out[i] = np.datetime64(f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}") + np.timedelta64(
                0 if np.isnan(second[i]) else int(second[i]), "s")
        except ValueError:
            pass  # an impossible date: NaT, flagged missing
    return out


def _station_ids(m: _Message) -> np.ndarray:
    """WMO block and station number (5 digits), else the WIGOS identifier, else a call sign."""
    block, number = m.per_report(("blockNumber",)), m.per_report(("stationNumber",))
    if np.isfinite(block).all() and np.isfinite(number).all():
        return np.array([f"{int(b):02d}{int(s):03d}" for b, s in zip(block, number)], dtype=object)
    wigos = m.per_report(("wigosLocalIdentifierCharacter",), text=True)
    series = m.per_report(("wigosIdentifierSeries",))
    issuer, issue = m.per_report(("wigosIssuerOfIdentifier",)), m.per_report(("wigosIssueNumber",))
    other = m.per_report(("shipOrMobileLandStationIdentifier", "aircraftRegistrationNumberOrOtherIdentification",
                          "aircraftFlightNumber", "stationOrSiteName"), text=True)
    out = np.empty(m.n, dtype=object)
    for i in range(m.n):
        if np.isfinite(block[i]) and np.isfinite(number[i]):
            out[i] = f"{int(block[i]):02d}{int(number[i]):03d}"
        elif wigos[i]:
            out[i] = f"{int(np.nan_to_num(series[i]))}-{int(np.nan_to_num(issuer[i]))}-{int(np.nan_to_num(issue[i]))}-{wigos[i]}"
        else:
            out[i] = other[i] or "unknown"
    return out


def _wind(direction: np.ndarray, speed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) from the direction the wind blows from (degrees) and the speed."""
    rad = np.radians(direction)
    return -speed * np.sin(rad), -speed * np.cos(rad)


def specific_humidity_from_dewpoint(td: np.ndarray, p: np.ndarray) -> np.ndarray:
    """q (kg/kg) from dewpoint (K) and pressure (Pa), Bolton (1980) vapour pressure."""
    e = 611.2 * np.exp(17.67 * (td - 273.15) / (td - 29.65))
    with np.errstate(invalid="ignore", divide="ignore"):
        q = 0.622 * e / (p - 0.378 * e)
    return np.where((q >= 0) & (q < 0.1), q, np.nan)  # vapour pressure above the air pressure: no q


def pressure_of_flight_level(h: np.ndarray) -> np.ndarray:
    """ICAO standard atmosphere pressure (Pa) at pressure altitude ``h`` (m)."""
    h = np.asarray(h, dtype=np.float64)
    low = 101325.0 * np.abs(1 - 2.25577e-5 * np.minimum(h, 11000.0)) ** 5.25588
    return np.where(h <= 11000.0, low, 22632.06 * np.exp(-1.57688e-4 * (h - 11000.0)))


class _Columns:
    """Reports accumulated message by message, made into observation rows once at the end.

    ``add`` takes the metadata of m reports (arrays of length m, or scalars) and a dict of
    variables, each m values; blocks with the same variables are stacked together.
    """

    META = ("station", "time", "lat", "lon", "elevation", "pressure")

    def __init__(self):
        self.groups: dict[tuple[str, tuple[str, ...]], tuple[dict[str, list], list]] = {}

    def add(self, platform: str, values: dict[str, np.ndarray], **meta) -> None:
        m = len(next(iter(values.values())))
        group = self.groups.setdefault((platform, tuple(values)), ({k: [] for k in self.META}, []))
        for k in self.META:
            a = np.asarray(meta.get(k, np.nan))
            group[0][k].append(a if a.ndim and len(a) == m else np.repeat(a, m))
        group[1].append(np.stack([np.asarray(v, dtype=np.float64) for v in values.values()]))

    def arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, list[np.ndarray]] = {k: [] for k in (*self.META, "platform", "variable", "value")}
        for (platform, names), (meta, values) in self.groups.items():
            block = np.concatenate(values, axis=1)           # (variables, reports)
            k, m = block.shape
            for name in self.META:
                out[name].append(np.tile(np.concatenate(meta[name]), k))
            out["platform"].append(np.full(k * m, platform, dtype=object))
            out["variable"].append(np.repeat(np.array(names, dtype=object), m))
            out["value"].append(block.ravel())
        return {k: np.concatenate(v) if v else np.empty(0) for k, v in out.items()}


def _surface(m: _Message, cols: _Columns, platform: str) -> None:
    u, v = _wind(m.per_report(("windDirectionAt10M", "windDirection")), m.per_report(("windSpeedAt10M", "windSpeed")))
    values = {"t2m": m.per_report(("airTemperatureAt2M", "airTemperature")),
              "d2m": m.per_report(("dewpointTemperatureAt2M", "dewpointTemperature")), "u10": u, "v10": v,
              "msl": m.per_report(("pressureReducedToMeanSeaLevel",)), "sp": m.per_report(("nonCoordinatePressure", "pressure"))}
    cols.add(platform, values, station=_station_ids(m), time=_times(m), lat=m.per_report(("latitude", "latitudeCoarseAccuracy")),
             lon=m.per_report(("longitude", "longitudeCoarseAccuracy")),
             elevation=m.per_report(("heightOfStationGroundAboveMeanSeaLevel", "heightOfStation")))


def _aircraft(m: _Message, cols: _Columns) -> None:
    pressure = m.per_report(("pressure",))
    level = m.per_report(("flightLevel", "height", "globalNavigationSatelliteSystemAltitude"))
    pressure = np.where(np.isfinite(pressure), pressure, pressure_of_flight_level(level))
    u, v = _wind(m.per_report(("windDirection",)), m.per_report(("windSpeed",)))
    r = m.per_report(("mixingRatio",))
    cols.add("aircraft", {"t": m.per_report(("airTemperature",)), "u": u, "v": v, "q": r / (1 + r)},
             station=_station_ids(m), time=_times(m), lat=m.per_report(("latitude", "latitudeCoarseAccuracy")),
             lon=m.per_report(("longitude", "longitudeCoarseAccuracy")), elevation=level, pressure=pressure)


def _sounding(m: _Message, cols: _Columns) -> None:
    """Profiles: the keys' occurrences are the levels of each report, in the same order."""
    stations, times = _station_ids(m), _times(m)
    lat, lon = m.per_report(("latitude",)), m.per_report(("longitude",))
    elevation = m.per_report(("heightOfStationGroundAboveMeanSeaLevel", "heightOfStation"))
    for s in range(m.n):
        if m.n == 1:
            get = m.numbers
        elif m.compressed:
            get = lambda key, s=s: _compressed_levels(m, key, s)  # noqa: E731
        else:
            get = lambda key, s=s: m.numbers(f"/subsetNumber={s + 1}/{key}")  # noqa: E731
        p = get("pressure")
        if p is None or p.size == 0:
            continue
        t = get("airTemperature")
        n = len(t) if t is not None else len(p)
        p = p[:n]  # the temperature/wind sequence comes first; later 'pressure's belong to wind shear

        def level(key, scale=1.0, get=get, n=n):
            a = get(key)
            if a is None:
                return np.full(n, np.nan)
            a = a[:n] * scale
            return np.pad(a, (0, n - len(a)), constant_values=np.nan)

        z = level("nonCoordinateGeopotential")
        if np.isnan(z).all():
            z = level("nonCoordinateGeopotentialHeight", G0)
        td = level("dewpointTemperature")
        u, v = _wind(level("windDirection"), level("windSpeed"))
        cols.add("temp", {"t": level("airTemperature"), "u": u, "v": v, "z": z, "q": specific_humidity_from_dewpoint(td, p)},
                 station=stations[s], time=times[s], lat=lat[s], lon=lon[s], elevation=elevation[s], pressure=p)


def _compressed_levels(m: _Message, key: str, subset: int) -> np.ndarray | None:
    values = []
    for rank in range(1, 10_000):
        a = m.numbers(f"#{rank}#{key}")
        if a is None:
            break
        values.append(a[0] if len(a) == 1 else a[subset])
    return np.array(values) if values else None


def message_spans(data: bytes) -> tuple[list[tuple[int, int]], int]:
    """(start, end) of each complete BUFR message in ``data``, and the number of damaged ones.

    Section 0 is ``BUFR`` and the total length (3 bytes); a message ends with ``7777``. Bytes
    between messages (WMO bulletin headers) are skipped; a message whose length runs past the end
    of the data or that does not end in ``7777`` is counted as damaged.
    """
    spans, damaged, pos = [], 0, 0
    while True:
        start = data.find(BUFR_MAGIC, pos)
        if start < 0 or start + 8 > len(data):
            return spans, damaged + (start >= 0)
        end = start + int.from_bytes(data[start + 4:start + 7], "big")
        if end > len(data) or end - start < 8 or data[end - 4:end] != b"7777":
            damaged += 1
            pos = start + 4
            continue
        spans.append((start, end))
        pos = end


def _decode(data: bytes, spans: list[tuple[int, int]]) -> tuple[dict[str, np.ndarray], Counter, int]:
    """Decode the messages at ``spans``: (columns, skipped kinds, number of messages decoded)."""
    import eccodes as ec

    cols = _Columns()
    surface: dict[str, list] = {}
    skipped: Counter[str] = Counter()
    decoded = 0
    layouts: dict[tuple, list] = {}
    for start, end in spans:
        header = _header(data, start, end)
        if header is not None and header[0] in (0, 1):
            known = layouts.get(header[1:4], [])
            row = None
            for layout in known:
                row = layout.row(data, header[4])
                if row is not None:
                    break
            if row is not None:
                surface.setdefault(PLATFORMS[header[0]], []).append(row)
                decoded += 1
                continue
            if len(known) >= 8:  # replication varies from report to report: stop learning layouts
                header = None
        else:
            header = None
        try:
            h = ec.codes_new_from_message(data[start:end])
        except ec.GribInternalError:
            skipped["corrupted message"] += 1
            continue
        try:
            category = int(ec.codes_get(h, "dataCategory"))
            platform = PLATFORMS.get(category)
            if platform is None:
                skipped[f"data category {category} ({CATEGORY_NAMES.get(category, 'unknown')})"] += 1
                continue
            try:
                ec.codes_set(h, "skipExtraKeyAttributes", 0 if header is not None else 1)
                ec.codes_set(h, "unpack", 1)
            except ec.GribInternalError as err:
                skipped[f"data category {category} messages ecCodes cannot expand ({_clean(err)})"] += 1
                continue
            m = _Message(h, ec)
            if category in (0, 1):
                if not _surface_row(m, surface.setdefault(platform, [])):
                    _surface(m, cols, platform)
                elif header is not None:
                    layout = _Layout.learn(h, ec, data, header[4])
                    expected = surface[platform][-1]  # what ecCodes decoded: the layout must read the same
                    if layout is not None and np.array_equal(layout.row(data, header[4]), expected, equal_nan=True):
                        layouts.setdefault(header[1:4], []).append(layout)
            elif category == 2:
                _sounding(m, cols)
            else:
                _aircraft(m, cols)
            decoded += 1
        finally:
            ec.codes_release(h)
    for platform, rows in surface.items():
        _surface_rows(rows, cols, platform)
    return cols.arrays(), skipped, decoded


def _header(data: bytes, start: int, end: int):
    """(category, edition, section 3 descriptors, section 4 length, data offset) of an uncompressed
    single-report message, read from sections 0-4 without ecCodes; None for any other message."""
    try:
        edition = data[start + 7]
        if edition not in (3, 4):
            return None
        sec1 = start + 8
        length1 = int.from_bytes(data[sec1:sec1 + 3], "big")
        category = data[sec1 + (8 if edition == 3 else 10)]
        has_sec2 = data[sec1 + (7 if edition == 3 else 9)] & 0x80
        sec3 = sec1 + length1
        if has_sec2:
            sec3 += int.from_bytes(data[sec3:sec3 + 3], "big")
        length3 = int.from_bytes(data[sec3:sec3 + 3], "big")
        subsets = int.from_bytes(data[sec3 + 4:sec3 + 6], "big")
        if subsets != 1 or data[sec3 + 6] & 0x40:
            return None
        sec4 = sec3 + length3
        length4 = int.from_bytes(data[sec4:sec4 + 3], "big")
        if sec4 + length4 > end:
            return None
        return category, edition, bytes(data[sec3 + 7:sec3 + length3]), length4, sec4 + 4
    except IndexError:
        return None


REPLICATION_KEYS = ("delayedDescriptorReplicationFactor", "shortDelayedDescriptorReplicationFactor",
                    "extendedDelayedDescriptorReplicationFactor")


class _Layout:
    """Bit positions of the surface elements in messages of one template and replication.

    Learnt from a message that ecCodes decoded (widths, scales and references of its data keys,
    in data order); a later message with the same descriptors, section 4 length and delayed
    replication factors has its elements at the same bits, read directly:
    value = (raw + reference) 10^-scale, all bits set = missing (WMO Manual on Codes, FM 94).
    """

    def __init__(self, fields: list, checks: list):
        self.fields, self.checks = fields, checks

    @classmethod
    def learn(cls, h, ec, data: bytes, offset: int):
        wanted = {c for codes in SURFACE_ROW for c in codes}
        position, found, checks = 0, {}, []
        it = ec.codes_bufr_keys_iterator_new(h)
        try:
            while ec.codes_bufr_keys_iterator_next(it):
                key = ec.codes_bufr_keys_iterator_get_name(it)
                if not key.startswith("#") or "->" in key:
                    continue
                name = key.split("#", 2)[2]
                if name in ("dataPresentIndicator",) or name.startswith("operator"):
                    break
                try:
                    width = int(ec.codes_get(h, f"{key}->width"))
                    code = int(ec.codes_get(h, f"{key}->code"))
                    scale = int(ec.codes_get(h, f"{key}->scale"))
                    reference = int(ec.codes_get(h, f"{key}->reference"))
                except ec.GribInternalError:
                    return None
                if name in REPLICATION_KEYS:
                    checks.append((position, width, int(ec.codes_get(h, key))))
                elif code in wanted and code not in found:
                    found[code] = (position, width, scale, reference)
                position += width
        finally:
            ec.codes_bufr_keys_iterator_delete(it)
        fields = []
        for codes in SURFACE_ROW:
            fields.append(next((found[c] for c in codes if c in found), None))
        return cls(fields, checks)

    @staticmethod
    def _bits(data: bytes, offset: int, position: int, width: int) -> int:
        first = offset + position // 8
        last = offset + (position + width - 1) // 8
        chunk = int.from_bytes(data[first:last + 1], "big")
        return (chunk >> ((last - first + 1) * 8 - position % 8 - width)) & ((1 << width) - 1)

    def row(self, data: bytes, offset: int) -> list | None:
        for position, width, value in self.checks:
            if self._bits(data, offset, position, width) != value:
                return None
        out = []
        for field in self.fields:
            if field is None:
                out.append(np.nan)
                continue
            position, width, scale, reference = field
            raw = self._bits(data, offset, position, width)
            out.append(np.nan if raw == (1 << width) - 1 else (raw + reference) * 10.0 ** (-scale))
        return out


SURFACE_ROW = (
    (1001,), (1002,), (4001,), (4002,), (4003,), (4004,), (4005,), (5001, 5002), (6001, 6002), (7030, 7001),
    (12004, 12101, 12001), (12006, 12103, 12003), (11011, 11001), (11012, 11002), (10051,), (10004,),
)


def _surface_row(m: _Message, rows: list) -> bool:
    """A single-report message with a WMO block/station number as one row of Python floats (fast path)."""
    first = m.first
    if first is None or first.get(1001) is None or first.get(1002) is None or first[1001] != first[1001] or first[1002] != first[1002]:
        return False
    row = []
    for codes in SURFACE_ROW:
        for code in codes:
            value = first.get(code)
            if value is not None:
                break
        row.append(np.nan if value is None else value)
    rows.append(row)
    return True


def _surface_rows(rows: list, cols: _Columns, platform: str) -> None:
    if not rows:
        return
    a = np.array(rows, dtype=np.float64).T
    block, number, year, month, day, hour, minute, lat, lon, elevation, t2m, d2m, direction, speed, msl, sp = a
    station = np.char.add(np.char.zfill(block.astype(np.int64).astype(str), 2), np.char.zfill(number.astype(np.int64).astype(str), 3))
    parts = np.stack([year, month, day, hour, minute])
    ok = np.isfinite(parts).all(axis=0)
    time = np.full(len(rows), np.datetime64("NaT"), dtype="datetime64[s]")
    if ok.any():
        y, mo, d, h, mi = (p[ok].astype(np.int64) for p in parts)
        valid = (mo >= 1) & (mo <= 12) & (d >= 1) & (d <= 31) & (h >= 0) & (h < 24) & (mi >= 0) & (mi < 60)
        stamp = ((y - 1970).astype("datetime64[Y]").astype("datetime64[M]") + (mo - 1)).astype("datetime64[D]") + (d - 1)
        stamp = stamp.astype("datetime64[s]") + (h * 3600 + mi * 60).astype("timedelta64[s]")
        time[np.flatnonzero(ok)[valid]] = stamp[valid]
    u, v = _wind(direction, speed)
    cols.add(platform, {"t2m": t2m, "d2m": d2m, "u10": u, "v10": v, "msl": msl, "sp": sp},
             station=station.astype(object), time=time, lat=lat, lon=lon, elevation=elevation)


def read_bufr(path: str | os.PathLike, workers: int | None = None) -> dict[str, np.ndarray]:
    """Columns of every decoded observation in ``path`` (one row per report, variable and level).

    ``workers`` > 1 forked processes decode parts of the file: worth it only for files of many
    messages that ecCodes must expand (radiosondes); single-report surface messages are read from
    their bits faster than a worker starts (default 1).
    """
    path = Path(path)
    data = path.read_bytes()
    if not data:
        raise DataError(path, "empty file")
    spans, damaged = message_spans(data)
    workers = min(workers or 1, max(len(spans), 1))
    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        bounds = np.linspace(0, len(spans), workers + 1).astype(int)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            parts = list(pool.map(_decode_part, [(str(path), spans[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]))
    else:
        parts = [_decode(data, spans)]
    skipped: Counter[str] = Counter()
    if damaged:
        skipped["truncated or corrupted message"] += damaged
    for _, counts, _ in parts:
        skipped.update(counts)
    decoded = sum(p[2] for p in parts)
    listed = ", ".join(f"{n} {what}" for what, n in skipped.items())
    if not decoded:
        raise DataError(path, f"no decodable BUFR report: {listed or 'no BUFR message'}")
    if skipped:
        warnings.warn(f"{path}: skipped {sum(skipped.values())} BUFR message(s): {listed}", DaflowWarning, stacklevel=2)
    columns = [p[0] for p in parts if len(p[0]["value"])]
    return {k: np.concatenate([c[k] for c in columns]) for k in columns[0]}


def _decode_part(args):
    path, spans = args
    with open(path, "rb") as f:
        data = f.read(spans[-1][1]) if spans else b""
    return _decode(data, spans)


def _clean(err: Exception) -> str:
    """An ecCodes message without control bytes."""
    text = str(err) or type(err).__name__
    return "".join(c if c.isprintable() else "?" for c in text)[:120]
