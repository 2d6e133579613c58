"""Two-level surface quasi-geostrophic (SQG) turbulence between rigid lids, batched over members.

The f-plane QG flow between lids at z = 0 and z = H with uniform interior PV (zero anomaly) is
fixed by the potential temperature on the two lids (Blumen 1978; Tulloch & Smith 2009, sect. 3).
With b_j = (g / (f theta0)) theta_j the scaled lid temperatures (m/s) and, per horizontal
wavenumber kappa, mu = kappa N H / f, the interior solution psi(z) = A cosh(mu z/H) + B sinh(mu z/H)
with d psi/dz = b at the lids gives the inversion

    psi_0 = (H/mu) (b_1 / sinh mu - b_0 / tanh mu),    psi_1 = (H/mu) (b_1 / tanh mu - b_0 / sinh mu),

and each lid temperature is advected by its own streamfunction, relaxed towards a baroclinic jet
and (optionally) damped by Ekman pumping:

    d theta_j/dt = -J(psi_j, theta_j) + (theta_eq,j - theta_j) / tdiab  -/+ r (f theta0/g) kappa^2 psi_j,

with J(psi, theta) = psi_x theta_y - psi_y theta_x (u = -psi_y, v = psi_x) and Ekman damping
+ at z = 0, - at z = H. The equilibrium is the symmetric jet of Whitaker's ``sqgturb``:
theta_eq = -(f theta0/g) (mu_0 U / (2 l H)) coth(mu_0 / 2) cos(l y) on both lids, l = 2 pi / L,
mu_0 = l N H / f (zonal wind U at the lids, 0 at mid-depth).

Numerics follow ``sqgturb`` (J. Whitaker, github.com/jswhit/sqgturb, ``sqgturb/sqg.py``, the model
of the LETKF and EnSF papers): pseudo-spectral on an N x N doubly periodic grid; the Jacobian is
dealiased by zero-padding the spectra to a 3N/2 grid and keeping the wavenumbers below N/2 (the
"2/3 rule"), with sqgturb's handling of the Nyquist column and of the (0, -N/2) coefficient;
classical RK4 in spectral space; order-8 hyperdiffusion as the integrating factor
exp(-(dt / diff_efold) (kappa / kappa_c)^8), kappa_c = pi N / L, applied once per step after the
RK4 update. :meth:`SQG.advance` keeps the spectrum between steps as sqgturb's ``advance`` does.

Advection factor (``advection``). sqgturb pads the spectrum with 2.25 = (3/2)^2 times the
coefficients, so that the inverse FFT on the 3N/2 grid gives the fields' values, but truncates the
forward FFT of the product without dividing by 2.25 again: its Jacobian is (3/2)^2 = 2.25 times
J(psi, theta). sqgturb's dynamics are therefore those of the equations above with the advection
multiplied by 2.25, equivalently the correct equations with dt, tdiab and diff_efold multiplied by
2.25; every published sqgturb figure (Whitaker's LETKF studies, the EnSF papers) was obtained
with it. ``advection="sqgturb"`` (default) reproduces sqgturb, so figures are comparable with the
papers; ``advection="exact"`` is the consistent scheme for the equations as written: factor 1,
and the (0, -N/2) coefficient of the truncated Jacobian kept real (see ``_from_padded_grid``).

The state tensor is the lid potential-temperature departure in kelvin, shape
(members, level=2, y, x): level 0 is z = 0, level 1 is z = H; y and x are in metres. All members
go through one batched FFT per transform.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from daflow.errors import DataError
from daflow.models.base import Model


ADVECTION = {"sqgturb": 2.25, "exact": 1.0}


class SQG(Model):
    """Two-level SQG turbulence (Tulloch & Smith 2009); defaults are the EnSF-paper configuration."""

    name = "sqg"
    variable = "theta"
    dims = ("level", "y", "x")
    default_dt = 1200.0
    time_units = "s"
    units = "K"

    def __init__(self, N: int = 64, L: float = 20.0e6, H: float = 10.0e3, f: float = 1.0e-4,
                 nsq: float = 1.0e-4, U: float = 30.0, r: float = 0.0, tdiab: float = 10.0 * 86400.0,
                 diff_order: int = 8, diff_efold: float = 86400.0, theta0: float = 300.0, g: float = 9.8,
                 advection: str = "sqgturb", dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
        """N grid points per side (even); L domain side (m); H lid height (m); f Coriolis (1/s);
        nsq buoyancy frequency squared (1/s^2); U jet speed at the lids (m/s); r Ekman damping
        coefficient (m/s, 0 = off); tdiab relaxation time (s, inf = off); diff_order, diff_efold:
        hyperdiffusion order and e-folding time (s) at the cut-off wavenumber (inf = off); theta0
        reference potential temperature (K); g gravity (m/s^2); advection "sqgturb" (Jacobian times
        2.25, as sqgturb computes it) or "exact" (see the module docstring)."""
        super().__init__(dtype=dtype, device=device)
        N = int(N)
        if N < 4 or N % 2:
            raise DataError(None, f"SQG needs an even grid size N >= 4, got N={N}")
        self.N, self.L, self.H, self.f, self.nsq, self.U = N, float(L), float(H), float(f), float(nsq), float(U)
        self.r, self.tdiab = float(r), float(tdiab)
        self.diff_order, self.diff_efold = int(diff_order), float(diff_efold)
        self.theta0, self.g = float(theta0), float(g)
        if advection not in ADVECTION:
            raise DataError(None, f"SQG advection must be one of {', '.join(ADVECTION)}, got {advection!r}")
        self.advection = advection
        self.advection_factor = ADVECTION[advection]
        self.scale = self.f * self.theta0 / self.g  # kelvin per (m/s) of scaled lid temperature b
        self._build_operators()
        self._hyperdiff: dict[float, torch.Tensor] = {}

    @property
    def params(self) -> dict[str, float | int]:
        return {"N": self.N, "L": self.L, "H": self.H, "f": self.f, "nsq": self.nsq, "U": self.U, "r": self.r,
                "tdiab": self.tdiab, "diff_order": self.diff_order, "diff_efold": self.diff_efold,
                "theta0": self.theta0, "g": self.g, "advection": self.advection}

    @property
    def state_shape(self) -> tuple[int, int, int]:
        return (2, self.N, self.N)

    def coords(self) -> dict[str, np.ndarray]:
        """level: lid height (m); y, x: grid positions (m)."""
        xy = np.arange(self.N) * (self.L / self.N)
        return {"level": np.array([0.0, self.H]), "y": xy, "x": xy.copy()}

    # --- spectral operators -------------------------------------------------------------------
    def _build_operators(self) -> None:
        N, half = self.N, self.N // 2
        cdtype = torch.complex64 if self.dtype == torch.float32 else torch.complex128
        real = {"dtype": self.dtype, "device": self.device}
        # wavenumbers (rad/m) in the rfft2 layout: kx (1, N/2+1) along x, ky (N, 1) along y
        kx = torch.fft.rfftfreq(N, d=1.0 / N, dtype=torch.float64)[None, :] * (2 * math.pi / self.L)
        ky = torch.fft.fftfreq(N, d=1.0 / N, dtype=torch.float64)[:, None] * (2 * math.pi / self.L)
        self.kappa2 = (kx**2 + ky**2).to(**real)                                 # (N, N/2+1)
        kappa = (kx**2 + ky**2).sqrt()
        mu = kappa * (math.sqrt(self.nsq) * self.H / self.f)
        mu[0, 0] = 1.0  # the mean streamfunction is arbitrary: its coefficients are zeroed below
        h_over_mu = self.H / mu / self.scale  # theta (K) -> psi (m^2/s)
        coth, csch = h_over_mu / torch.tanh(mu), h_over_mu / torch.sinh(mu)
        coth[0, 0] = csch[0, 0] = 0.0
        # psi_j = sum_i inversion[i, j] * theta_i per wavenumber: (2 i, 2 j, N, N/2+1)
        self.inversion = torch.stack((torch.stack((-coth, -csch)), torch.stack((csch, coth)))).to(**real)
        self.kappa_cutoff = math.pi * N / self.L
        self.kappa_over_cutoff = (kappa / self.kappa_cutoff).to(**real)
        # d/dx, d/dy on the N grid's half spectrum: (2, 1, 1, N, N/2+1)
        self.grad = torch.stack((1j * kx.expand(N, -1), 1j * ky.expand(-1, half + 1)))[:, None, None].to(cdtype).to(self.device)
        # the dealiased products live on a 3N/2 grid; rows l = 0..N/2-1 and -N/2..-1 of the N grid
        # sit at rows 0..N/2-1 and 3N/2-N/2..3N/2-1 of the padded spectrum
        self.n_pad = 3 * N // 2
        self.rows_pad = torch.cat((torch.arange(half), torch.arange(self.n_pad - half, self.n_pad))).to(self.device)
        # equilibrium jet (K), symmetric between the lids
        y = torch.arange(N, dtype=torch.float64) * (self.L / N)
        l0 = 2 * math.pi / self.L
        mu0 = l0 * math.sqrt(self.nsq) * self.H / self.f
        jet = -self.scale * (mu0 * 0.5 * self.U / (l0 * self.H)) / math.tanh(0.5 * mu0) * torch.cos(l0 * y)
        self.theta_eq = jet[None, :, None].expand(2, N, N).to(**real).contiguous()   # (2, N, N)
        self.theta_eq_spec = torch.fft.rfft2(self.theta_eq, norm="forward")          # (2, N, N/2+1)
        self.relax = 0.0 if math.isinf(self.tdiab) else 1.0 / self.tdiab
        self.ekman = self.r * self.scale * self.kappa2 * torch.tensor([1.0, -1.0], **real)[:, None, None]

    def hyperdiffusion(self, dt: float) -> torch.Tensor:
        """Integrating factor exp(-(dt/diff_efold) (kappa/kappa_c)^order), (N, N/2+1), cached per dt."""
        if dt not in self._hyperdiff:
            self._hyperdiff[dt] = torch.exp(-(dt / self.diff_efold) * self.kappa_over_cutoff**self.diff_order)
        return self._hyperdiff[dt]

    def streamfunction(self, theta_spec: torch.Tensor) -> torch.Tensor:
        """psi (m^2/s) at both lids from theta (K), spectral: (..., 2, N, N/2+1) -> same shape."""
        return self.inversion[0] * theta_spec[..., :1, :, :] + self.inversion[1] * theta_spec[..., 1:, :, :]

    def _to_padded_grid(self, spec: torch.Tensor) -> torch.Tensor:
        """Fields (..., N, N/2+1) spectral -> (..., 3N/2, 3N/2) on the padded grid (zero padding).

        The inverse transform runs in two 1-D passes so that the y-transform skips the padded
        columns k > N/2, which are all zero (about a quarter of the 2-D transform's work);
        ``irfft(n=3N/2)`` pads the columns itself."""
        half = self.N // 2
        rows = spec.new_zeros((*spec.shape[:-2], self.n_pad, half + 1))
        rows[..., :half, :] = spec[..., :half, :]
        rows[..., self.n_pad - half:, :] = spec[..., half:, :]
        columns = torch.fft.ifft(rows, dim=-2, norm="forward")
        return torch.fft.irfft(columns, n=self.n_pad, dim=-1, norm="forward")

    def _from_padded_grid(self, grid: torch.Tensor) -> torch.Tensor:
        """(..., 3N/2, 3N/2) on the padded grid -> spectral (..., N, N/2+1), keeping l = -N/2..N/2-1
        and k < N/2 (the "2/3 rule"; the Nyquist column k = N/2 is zero), exactly as sqgturb's
        ``spectrunc``: the coefficient of (k, l) = (0, -N/2) keeps its imaginary part, a sine that
        vanishes on the N grid but not on the padded one, so it acts on the dynamics while the state
        stays spectral (:meth:`advance`) and is lost whenever the state goes through the grid.
        With ``advection="exact"`` only its real part (a cosine on the N grid) is kept: the
        truncation then conserves energy exactly and the grid <-> spectrum round trip is lossless."""
        half = self.N // 2
        columns = torch.fft.rfft(grid, dim=-1, norm="forward")[..., :half + 1]   # y-transform of kept columns only
        spec = torch.fft.fft(columns, dim=-2, norm="forward").index_select(-2, self.rows_pad)
        spec[..., half] = 0.0
        if self.advection_factor == 1.0:
            spec[..., half, 0] = spec[..., half, 0].real
        return spec

    def jacobian(self, psi_spec: torch.Tensor, theta_spec: torch.Tensor) -> torch.Tensor:
        """J(psi, theta) = psi_x theta_y - psi_y theta_x, dealiased, spectral (..., 2, N, N/2+1).

        As in sqgturb, the Nyquist column k = N/2 enters the padded spectrum conjugated, at +N/2."""
        fields = torch.stack((psi_spec, theta_spec), dim=-4)            # (..., 2 field, 2 lev, N, N/2+1)
        fields[..., -1] = fields[..., -1].conj()
        grads = self._to_padded_grid(fields.unsqueeze(-5) * self.grad)  # (..., 2 d/dx d/dy, 2 field, 2 lev, Np, Np)
        (psi_x, theta_x), (psi_y, theta_y) = (g.unbind(-4) for g in grads.unbind(-5))
        return self._from_padded_grid(psi_x * theta_y - psi_y * theta_x)

    def tendency(self, theta_spec: torch.Tensor) -> torch.Tensor:
        """d theta/dt without hyperdiffusion, spectral (members, 2, N, N/2+1)."""
        psi_spec = self.streamfunction(theta_spec)
        dtheta = -self.advection_factor * self.jacobian(psi_spec, theta_spec)
        if self.relax:
            dtheta += self.relax * (self.theta_eq_spec - theta_spec)
        if self.r:
            dtheta += self.ekman * psi_spec
        return dtheta

    def step_spectral(self, theta_spec: torch.Tensor, dt: float) -> torch.Tensor:
        """One RK4 step of the spectral state, then the hyperdiffusion integrating factor."""
        k1 = self.tendency(theta_spec)
        k2 = self.tendency(theta_spec + (0.5 * dt) * k1)
        k3 = self.tendency(theta_spec + (0.5 * dt) * k2)
        k4 = self.tendency(theta_spec + dt * k3)
        update = theta_spec + (dt / 6.0) * (k1 + 2.0 * (k2 + k3) + k4)
        return update if math.isinf(self.diff_efold) else update * self.hyperdiffusion(dt)

    def step(self, x: torch.Tensor, dt: float) -> torch.Tensor:
        """(members, 2, N, N) theta in K -> the same after one step of dt seconds."""
        return self.advance(x, dt, 1)

    def advance(self, x: torch.Tensor, dt: float, steps: int) -> torch.Tensor:
        """``steps`` steps with the state kept spectral in between, as sqgturb's ``advance`` does
        (grid -> rfft2 -> steps -> irfft2)."""
        spec = torch.fft.rfft2(x, norm="forward")
        for _ in range(steps):
            spec = self.step_spectral(spec, float(dt))
        return torch.fft.irfft2(spec, s=x.shape[-2:], norm="forward")

    # --- diagnostics ----------------------------------------------------------------------------
    def _mode_weights(self) -> torch.Tensor:
        """Weights of the rfft2 half-spectrum columns for sums over the full spectrum (N/2+1,)."""
        w = torch.full((self.N // 2 + 1,), 2.0, dtype=self.dtype, device=self.device)
        w[0] = w[-1] = 1.0
        return w

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """Total energy per unit area, (members,) in m^3/s^2 (per unit density):
        E = (1/2) (1/A) int int_0^H (|grad psi|^2 + (f^2/N^2) psi_z^2) dz dA
          = (f^2 / (2 N^2)) (g/(f theta0)) <psi_1 theta_1 - psi_0 theta_0>   (interior PV zero)."""
        spec = torch.fft.rfft2(x, norm="forward")
        psi = self.streamfunction(spec)
        lid = (psi * spec.conj()).real * self._mode_weights()
        per_lid = lid.sum(dim=(-2, -1))   # (members, 2)
        return (self.f**2 / (2 * self.nsq)) / self.scale * (per_lid[:, 1] - per_lid[:, 0])

    def random_state(self, members: int, generator: torch.Generator) -> torch.Tensor:
        """sqgturb's standard start, in K: white noise (sd 100 m/s of scaled temperature) on both lids
        plus a blob 2000 sin(x/2)^40 sin(y)^20 (x, y in [0, 2 pi)) on the upper lid, lid means removed."""
        N = self.N
        b = 100.0 * torch.randn(members, 2, N, N, generator=generator, dtype=torch.float64, device=generator.device)
        angle = torch.arange(N, dtype=torch.float64) * (2 * math.pi / N)
        blob = 2000.0 * torch.sin(angle[None, :] / 2) ** 40 * torch.sin(angle[:, None]) ** 20   # (y, x)
        b[:, 1] += blob.to(b.device)
        b -= b.mean(dim=(-2, -1), keepdim=True)
        return (self.scale * b).to(dtype=self.dtype, device=self.device)
