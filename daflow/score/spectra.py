"""Variance spectra of gridded fields, averaged over leading axes.

- ``i`` (Lorenz ring) and ``y, x`` (doubly periodic model grids): discrete Fourier power per
  wavenumber; on (y, x) summed over annuli k = round(sqrt(kx^2 + ky^2)) (isotropic spectrum).
- ``lat, lon`` on a global grid (longitude periodic): zonal spectrum per latitude row, averaged
  with cos(latitude) weights. Regional lat/lon grids are not periodic: no spectrum there.
Normalised so that the sum over wavenumbers >= 1 equals the spatial variance (Parseval).
"""
from __future__ import annotations

import numpy as np


def periodic_spectrum_1d(field: np.ndarray) -> np.ndarray:
    """(..., n) -> (n//2 + 1,) power averaged over leading axes."""
    n = field.shape[-1]
    coef = np.fft.rfft(field, axis=-1) / n
    power = np.abs(coef) ** 2
    power[..., 1:(n + 1) // 2] *= 2  # both signs of k
    return power.reshape(-1, power.shape[-1]).mean(axis=0)


def isotropic_spectrum_2d(field: np.ndarray) -> np.ndarray:
    """(..., ny, nx) -> (min(ny, nx)//2 + 1,) power summed over wavenumber annuli."""
    ny, nx = field.shape[-2:]
    power = np.abs(np.fft.fft2(field, axes=(-2, -1)) / (ny * nx)) ** 2
    power = power.reshape(-1, ny, nx).mean(axis=0)
    ky, kx = np.meshgrid(np.fft.fftfreq(ny, 1 / ny), np.fft.fftfreq(nx, 1 / nx), indexing="ij")
    shell = np.rint(np.hypot(ky, kx)).astype(int)
    kmax = min(ny, nx) // 2
    keep = shell <= kmax
    return np.bincount(shell[keep], weights=power[keep], minlength=kmax + 1)


def zonal_spectrum(field: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """(..., nlat, nlon) on a global grid -> (nlon//2 + 1,), cos(lat)-weighted over rows."""
    nlon = field.shape[-1]
    coef = np.fft.rfft(field, axis=-1) / nlon
    power = np.abs(coef) ** 2
    power[..., 1:(nlon + 1) // 2] *= 2
    weights = np.cos(np.deg2rad(lat))
    power = np.tensordot(power.reshape(-1, len(lat), power.shape[-1]).mean(axis=0), weights / weights.sum(), axes=(0, 0))
    return power


def spectrum(field: np.ndarray, dims: tuple[str, ...], coords: dict[str, np.ndarray]) -> np.ndarray | None:
    """The spectrum fitting the grid of ``field`` (horizontal dims last), or None."""
    if dims[-1:] == ("i",):
        return periodic_spectrum_1d(field)
    if dims[-2:] == ("y", "x"):
        return isotropic_spectrum_2d(field)
    if dims[-2:] == ("lat", "lon") and _is_global(coords["lon"]):
        return zonal_spectrum(field, coords["lat"])
    return None


def _is_global(lon: np.ndarray) -> bool:
    if lon.ndim != 1 or len(lon) < 4:
        return False
    step = np.diff(lon)
    return bool(np.allclose(step, step[0]) and np.isclose(abs(step[0]) * len(lon), 360.0))
