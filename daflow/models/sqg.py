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
and the (0, -N/2) coefficient of the truncated Jacobian kept real (see ``SQG._minus_jacobian``).

The state tensor is the lid potential-temperature departure in kelvin, shape
(members, level=2, y, x): level 0 is z = 0, level 1 is z = H; y and x are in metres. Inside
:meth:`SQG.advance` the spectrum is held as (N rows, members x levels, N/2+1) so that the
transforms to and from the padded grid are a few large matrix products over all members.
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
            raise DataError(None, f"SQG advection must be one of {', '.join(ADVECTION)}, got {str(advection)!r}")
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
        N = self.N
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
        self.n_pad = 3 * N // 2
        self._build_transforms(kx[0], ky[:, 0])
        # equilibrium jet (K), symmetric between the lids
        y = torch.arange(N, dtype=torch.float64) * (self.L / N)
        l0 = 2 * math.pi / self.L
        mu0 = l0 * math.sqrt(self.nsq) * self.H / self.f
        jet = -self.scale * (mu0 * 0.5 * self.U / (l0 * self.H)) / math.tanh(0.5 * mu0) * torch.cos(l0 * y)
        self.theta_eq = jet[None, :, None].expand(2, N, N).to(**real).contiguous()   # (2, N, N)
        self.theta_eq_spec = torch.fft.rfft2(self.theta_eq, norm="forward")          # (2, N, N/2+1)
        self.relax = 0.0 if math.isinf(self.tdiab) else 1.0 / self.tdiab
        self.ekman = self.r * self.scale * self.kappa2 * torch.tensor([1.0, -1.0], **real)[:, None, None]

    def _build_transforms(self, kx: torch.Tensor, ky: torch.Tensor) -> None:
        """The zero-padded inverse and the truncated forward transforms between the N-grid half
        spectrum and the 3N/2 grid as dense matrices (built in float64, then cast). For a batch of
        members, four large matrix products per Jacobian are faster than many short FFTs, and the
        zero padding, the truncation, the derivatives and the normalisation cost nothing extra.

        Inverse, per field F (rows l = 0..N/2-1, -N/2..-1; columns k = 0..N/2), P = 3N/2:
            G = E_y F,  E_y[p, l] = exp(2 pi i l p / P)             (and i l E_y for d/dy)
            g[p, q] = sum_k w_k Re(G[p, k] exp(2 pi i k q / P))     (and times i k for d/dx),
        w_0 = 1, w_k = 2 otherwise (the Hermitian half; the Nyquist column k = N/2 < P/2 of the N
        grid is an ordinary column of the padded grid), as a real product on interleaved (Re G, Im G).
        Forward: C[p, k] = (1/P) sum_q g[p, q] exp(-2 pi i k q / P) for k < N/2 (0 at k = N/2), then
        spec[l, k] = (1/P) sum_p C[p, k] exp(-2 pi i l p / P) for the N kept rows l."""
        N, P, half = self.N, self.n_pad, self.N // 2
        cdtype = torch.complex64 if self.dtype == torch.float32 else torch.complex128
        real = {"dtype": self.dtype, "device": self.device}
        p = torch.arange(P, dtype=torch.float64)
        rows = torch.fft.fftfreq(N, d=1.0 / N, dtype=torch.float64)
        cols = torch.arange(half + 1, dtype=torch.float64)
        ey = torch.exp(2j * math.pi * p[:, None] * rows[None, :] / P)                  # (P, N)
        self._inverse_y = torch.cat((ey, ey * (1j * ky)[None, :])).to(cdtype).to(self.device)   # (2P, N): F, dF/dy
        ex = torch.where(cols == 0, 1.0, 2.0)[:, None] * torch.exp(2j * math.pi * cols[:, None] * p[None, :] / P)

        def interleaved(a: torch.Tensor) -> torch.Tensor:   # Re(G a) = Re G Re a - Im G Im a: (N + 2, P)
            return torch.stack((a.real, -a.imag), dim=1).reshape(2 * (half + 1), P).to(**real)

        self._inverse_x, self._inverse_dx = interleaved(ex), interleaved(ex * (1j * kx)[:, None])
        fx = torch.exp(-2j * math.pi * p[:, None] * cols[None, :] / P) / P             # (P, N/2+1)
        fx[:, half] = 0.0
        self._forward_x = torch.view_as_real(fx).reshape(P, 2 * (half + 1)).to(**real)
        fy = torch.exp(-2j * math.pi * rows[:, None] * p[None, :] / P) / P             # (N, P)
        self._forward_y = (-self.advection_factor * fy).to(cdtype).to(self.device)    # -factor J folded in

    def hyperdiffusion(self, dt: float) -> torch.Tensor:
        """Integrating factor exp(-(dt/diff_efold) (kappa/kappa_c)^order), (N, N/2+1), cached per dt."""
        if dt not in self._hyperdiff:
            self._hyperdiff[dt] = torch.exp(-(dt / self.diff_efold) * self.kappa_over_cutoff**self.diff_order)
        return self._hyperdiff[dt]

    def streamfunction(self, theta_spec: torch.Tensor) -> torch.Tensor:
        """psi (m^2/s) at both lids from theta (K), spectral: (..., 2, N, N/2+1) -> same shape."""
        return self.inversion[0] * theta_spec[..., :1, :, :] + self.inversion[1] * theta_spec[..., 1:, :, :]

    def _minus_jacobian(self, psi: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """-factor J(psi, theta) (factor 2.25 for sqgturb, 1 for exact), dealiased on the 3N/2 grid
        (:meth:`_build_transforms`), in the internal layout: psi, theta and the result (N, B, N/2+1),
        B = members x levels.

        As sqgturb does, the Nyquist column k = N/2 enters the padded spectrum conjugated, at +N/2,
        and the (0, -N/2) coefficient of the result keeps its imaginary part: a sine that vanishes
        on the N grid but not on the padded one, so it acts on the dynamics while the state stays
        spectral (:meth:`advance`) and is lost when the state goes through the grid. With
        advection="exact" only its real part is kept: the truncation then conserves energy
        exactly and the grid <-> spectrum round trip is lossless."""
        N, P, half = self.N, self.n_pad, self.N // 2
        B = psi.shape[1]
        fields = torch.stack((psi, theta), dim=1)                              # (N, 2 field, B, N/2+1)
        torch.view_as_real(fields)[..., half, 1].neg_()                         # conjugate the Nyquist column
        along_y = torch.view_as_real(self._inverse_y @ fields.view(N, -1)).view(2, P * 2 * B, N + 2)
        d_dx = (along_y[0] @ self._inverse_dx).view(P, 2, B, P)                # (y, field, B, x)
        d_dy = (along_y[1] @ self._inverse_x).view(P, 2, B, P)
        product = d_dx[:, 0] * d_dy[:, 1] - d_dy[:, 0] * d_dx[:, 1]            # J on the padded grid (y, B, x)
        columns = (product.view(-1, P) @ self._forward_x).view(P, B * (half + 1), 2)
        spec = (self._forward_y @ torch.view_as_complex(columns)).view(N, B, half + 1)
        if self.advection_factor == 1.0:
            torch.view_as_real(spec)[half, :, 0, 1] = 0.0
        return spec

    def _internal(self, spec: torch.Tensor) -> torch.Tensor:
        """(members, 2, N, N/2+1) -> the internal layout (N, members x 2, N/2+1), contiguous."""
        return spec.permute(2, 0, 1, 3).reshape(self.N, -1, self.N // 2 + 1)

    def _external(self, spec: torch.Tensor, members: int) -> torch.Tensor:
        return spec.view(self.N, members, 2, -1).permute(1, 2, 0, 3).contiguous()

    def _tendency(self, theta: torch.Tensor, ops: dict) -> torch.Tensor:
        """d theta/dt without hyperdiffusion in the internal layout (N, B, N/2+1)."""
        t = theta.view(self.N, -1, 2, self.N // 2 + 1)
        psi = torch.stack((ops["a00"] * t[:, :, 0] + ops["a10"] * t[:, :, 1],
                           ops["a01"] * t[:, :, 0] + ops["a11"] * t[:, :, 1]), dim=2).view(theta.shape)
        dtheta = self._minus_jacobian(psi, theta)
        if self.relax:
            dtheta += self.relax * (ops["eq"] - theta)
        if self.r:
            dtheta += ops["ekman"] * psi
        return dtheta

    def _internal_operators(self, members: int) -> dict:
        """The per-wavenumber operators broadcast to the internal layout."""
        inv = self.inversion[:, :, :, None, :]                                  # (2 i, 2 j, N, 1, N/2+1)
        ops = {f"a{i}{j}": inv[i, j] for i in range(2) for j in range(2)}
        ops["eq"] = self._internal(self.theta_eq_spec.expand(members, -1, -1, -1))
        ops["ekman"] = self._internal(self.ekman.expand(members, -1, -1, -1))
        return ops

    def tendency(self, theta_spec: torch.Tensor) -> torch.Tensor:
        """d theta/dt without hyperdiffusion, spectral (members, 2, N, N/2+1)."""
        members = theta_spec.shape[0]
        return self._external(self._tendency(self._internal(theta_spec), self._internal_operators(members)), members)

    def _step(self, theta: torch.Tensor, dt: float, ops: dict) -> torch.Tensor:
        k1 = self._tendency(theta, ops)
        k2 = self._tendency(theta + (0.5 * dt) * k1, ops)
        k3 = self._tendency(theta + (0.5 * dt) * k2, ops)
        k4 = self._tendency(theta + dt * k3, ops)
        update = theta + (dt / 6.0) * (k1 + 2.0 * (k2 + k3) + k4)
        return update if math.isinf(self.diff_efold) else update * self.hyperdiffusion(dt)[:, None, :]

    def step_spectral(self, theta_spec: torch.Tensor, dt: float) -> torch.Tensor:
        """One RK4 step of the spectral state (members, 2, N, N/2+1), then the hyperdiffusion factor."""
        members = theta_spec.shape[0]
        return self._external(self._step(self._internal(theta_spec), float(dt), self._internal_operators(members)), members)

    def step(self, x: torch.Tensor, dt: float) -> torch.Tensor:
        """(members, 2, N, N) theta in K -> the same after one step of dt seconds."""
        return self.advance(x, dt, 1)

    def advance(self, x: torch.Tensor, dt: float, steps: int) -> torch.Tensor:
        """``steps`` steps with the state kept spectral in between, as sqgturb's ``advance`` does
        (grid -> rfft2 -> steps -> irfft2)."""
        members = x.shape[0]
        ops = self._internal_operators(members)
        theta = self._internal(torch.fft.rfft2(x, norm="forward"))
        for _ in range(steps):
            theta = self._step(theta, float(dt), ops)
        return torch.fft.irfft2(self._external(theta, members), s=x.shape[-2:], norm="forward")

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
