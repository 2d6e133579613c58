"""Inpainting: fill the unobserved points of 2-D fields from the observed ones (Liang et al. 2025).

EnSF under partial observations updates the observed grid points; these methods then fill the
rest of each member's analysis increment, level by level, from its values at the observed points
(daflow.da.ensf: the pseudo-observations are background plus inpainted increment):

- ``biharmonic``: the biharmonic extension Delta^2 u = 0 off the mask with the observed values
  fixed (Damelin & Hoang 2018; ``skimage.restoration.inpaint_biharmonic``). Reproduces any field
  that is biharmonic, e.g. linear or harmonic ones.
- ``navier-stokes`` and ``telea``: OpenCV's ``cv2.inpaint`` (Bertalmio, Bertozzi & Sapiro 2001;
  Telea 2004); ``radius`` is the neighbourhood in grid points. Navier-Stokes takes the fields as
  float32, unscaled, with no 8-bit round trip. OpenCV's Telea on float32 input is wrong (a
  constant 273.15 K field comes back with errors of 1-3 K), so Telea gets 16-bit images: each
  field mapped linearly from [min, max] of its observed values to [0, 65535] and back
  (quantisation (max - min) / 65535, about 1e-3 K for SQG).
- ``dct-tv``: a sparse fit in the orthonormal 2-D DCT basis with total variation,
  min_c 1/2 |M (D^T c - f)|^2 + lam |c|_1 + tv TV_eps(D^T c), by FISTA (Beck & Teboulle 2009) with
  continuation on lam, on fields standardised by their observed mean and standard deviation
  (so lam and tv are scale-free); TV_eps = sum sqrt(|grad u|^2 + eps^2). Reproduces fields that
  are a few DCT modes when enough points are observed (compressed sensing).
- ``oi``: optimal interpolation u_u = m_u + B_uo (B_oo + r^2 I)^{-1} (f_o - m_o) with B the
  background-ensemble covariance of the level, Gaspari-Cohn-localised (Schur product) with a
  radius of two mean observation spacings, and nugget r^2 = 10% of the mean background variance.
  Its arrays are (unobserved x observed) per level.

Model grids are doubly periodic: with ``periodic=True`` the fields are wrapped (padded with a
quarter of the grid on each side) before biharmonic/OpenCV/DCT inpainting, then cropped.
"""
from __future__ import annotations

import cv2
import numpy as np
from scipy.fft import dctn, idctn
from skimage.restoration import inpaint_biharmonic

from daflow.da.localization import HALF_WIDTH_PER_RADIUS, gaspari_cohn
from daflow.errors import DataError

METHODS = ("biharmonic", "navier-stokes", "telea", "dct-tv", "oi")


def inpaint(fields: np.ndarray, observed: np.ndarray, method: str, periodic: bool = False,
            background: np.ndarray | None = None, radius: int = 5, source=None) -> np.ndarray:
    """Fill ``fields`` (K, ny, nx) where ``observed`` (ny, nx) is False; observed values are kept
    and the unobserved ones (NaN allowed) are not used.

    ``background`` (N, ny, nx) is the ensemble that gives the covariance of ``oi``.
    DataError when the mask observes nothing.
    """
    observed = np.asarray(observed, dtype=bool)
    if not observed.any():
        raise DataError(source, "the observation mask observes nothing: nothing to inpaint from")
    fields = np.asarray(fields, dtype=np.float64)
    fields = np.where(observed, fields, fields[:, observed].mean(1)[:, None, None])  # unobserved values unused
    if observed.all():
        return fields.copy()
    if method == "oi":
        if background is None:
            raise ValueError("oi inpainting needs the background ensemble")
        filled = _optimal_interpolation(fields, observed, background, periodic)
    else:
        fill = {"biharmonic": _biharmonic, "navier-stokes": lambda f, m: _opencv(f, m, cv2.INPAINT_NS, radius),
                "telea": lambda f, m: _opencv(f, m, cv2.INPAINT_TELEA, radius), "dct-tv": dct_tv_fit}.get(method)
        if fill is None:
            raise ValueError(f"unknown inpainting method {method!r}; choose from {', '.join(METHODS)}")
        ny, nx = observed.shape
        pad = (ny // 4, nx // 4) if periodic else (0, 0)
        wide = np.pad(fields, ((0, 0), (pad[0],) * 2, (pad[1],) * 2), mode="wrap")
        mask = np.pad(observed, ((pad[0],) * 2, (pad[1],) * 2), mode="wrap")
        filled = fill(wide, mask)[:, pad[0]:pad[0] + ny, pad[1]:pad[1] + nx]
    return np.where(observed, fields, filled)


def _biharmonic(fields: np.ndarray, observed: np.ndarray) -> np.ndarray:
    return inpaint_biharmonic(fields, ~observed, channel_axis=0)  # one factorisation for all K


def _opencv(fields: np.ndarray, observed: np.ndarray, flag: int, radius: int) -> np.ndarray:
    hole = (~observed).astype(np.uint8)
    if flag == cv2.INPAINT_NS:
        return np.stack([cv2.inpaint(f.astype(np.float32), hole, radius, flag) for f in fields]).astype(np.float64)
    low = np.array([f[observed].min() for f in fields])[:, None, None]
    span = np.maximum(np.array([f[observed].max() for f in fields])[:, None, None] - low, 1e-300)
    levels = np.round((fields - low) / span * 65535).clip(0, 65535).astype(np.uint16)
    filled = np.stack([cv2.inpaint(f, hole, radius, flag) for f in levels])
    return low + filled.astype(np.float64) / 65535 * span


def dct_tv_fit(fields: np.ndarray, observed: np.ndarray, lam: float = 0.01, tv: float = 0.002,
               eps: float = 0.1, iterations: int = 300) -> np.ndarray:
    """Sparse-DCT + TV fit of (K, ny, nx) fields to their observed values (FISTA, continuation)."""
    m = observed.astype(np.float64)
    shift = np.array([f[observed].mean() for f in fields])[:, None, None]
    scale = np.array([f[observed].std() for f in fields])[:, None, None]
    scale = np.where(scale > 0, scale, 1.0)
    data = m * (fields - shift) / scale                                  # (K, ny, nx), 0 off the mask
    step = 1.0 / (1.0 + 8.0 * tv / eps)                                  # 1 / Lipschitz constant
    coef = dctn(data, axes=(-2, -1), norm="ortho")
    start = np.abs(coef).max()
    momentum, previous, t = coef, coef, 1.0
    for k in range(iterations):
        u = idctn(momentum, axes=(-2, -1), norm="ortho")
        grad = m * (u - data) + tv * _tv_gradient(u, eps)
        z = momentum - step * dctn(grad, axes=(-2, -1), norm="ortho")
        threshold = step * max(lam, start * 0.9 ** k)
        coef = np.sign(z) * np.maximum(np.abs(z) - threshold, 0.0)
        t_next = 0.5 * (1 + np.sqrt(1 + 4 * t * t))
        momentum, previous, t = coef + (t - 1) / t_next * (coef - previous), coef, t_next
    return shift + scale * idctn(coef, axes=(-2, -1), norm="ortho")


def _tv_gradient(u: np.ndarray, eps: float) -> np.ndarray:
    """Gradient of sum sqrt(|grad u|^2 + eps^2) (forward differences): -div(grad u / |grad u|_eps)."""
    gx = np.roll(u, -1, -1) - u
    gy = np.roll(u, -1, -2) - u
    norm = np.sqrt(gx**2 + gy**2 + eps**2)
    px, py = gx / norm, gy / norm
    return -(px - np.roll(px, 1, -1) + py - np.roll(py, 1, -2))


def _optimal_interpolation(fields: np.ndarray, observed: np.ndarray, background: np.ndarray,
                           periodic: bool) -> np.ndarray:
    ny, nx = observed.shape
    flat = observed.ravel()
    o, u = np.flatnonzero(flat), np.flatnonzero(~flat)
    ens = background.reshape(background.shape[0], -1).astype(np.float64)
    mean = ens.mean(0)
    anomalies = (ens - mean) / np.sqrt(max(ens.shape[0] - 1, 1))       # (N, C)
    points = np.stack(np.unravel_index(np.arange(ny * nx), (ny, nx)), 1).astype(np.float64)
    radius = 2.0 / np.sqrt(flat.mean())                                  # two mean observation spacings

    def taper(a, b):
        delta = np.abs(points[a][:, None, :] - points[b][None, :, :])
        if periodic:
            delta = np.minimum(delta, np.array([ny, nx]) - delta)
        return gaspari_cohn(np.sqrt((delta**2).sum(-1)) / (HALF_WIDTH_PER_RADIUS * radius))

    B_oo = taper(o, o) * (anomalies[:, o].T @ anomalies[:, o])         # (p, p)
    B_uo = taper(u, o) * (anomalies[:, u].T @ anomalies[:, o])         # (q, p)
    B_oo[np.diag_indices_from(B_oo)] += 0.1 * (anomalies**2).sum(0).mean()
    innovations = fields.reshape(fields.shape[0], -1)[:, o] - mean[o]  # (K, p)
    weights = np.linalg.solve(B_oo, innovations.T)                      # (p, K)
    out = fields.reshape(fields.shape[0], -1).copy()
    out[:, u] = mean[u] + (B_uo @ weights).T
    return out.reshape(fields.shape)
