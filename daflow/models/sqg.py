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
the (0, -N/2) coefficient of the truncated Jacobian kept real, and the N grid's Nyquist column
k = N/2 inert (it neither advects nor is advected), so that the truncated Jacobian conserves the
total energy of any state (see ``SQG._tendency_into``).

When N = 2 (mod 4), 3N/2 is odd and sqgturb's padded spectrum has 3N/4 + 1/2 columns (integer
division), which numpy's inverse real FFT puts on 3N/2 - 1 points along x: its padded grid is
3N/2 x (3N/2 - 1), the 2/3 rule no longer removes all aliasing along x, and its factor is
2.25^2 N^2 / (3N/2 (3N/2 - 1)) (2.30 at N = 30) instead of 2.25. ``advection="sqgturb"`` follows it
there too; ``advection="exact"`` uses the 3N/2 x 3N/2 grid.

The state tensor is the lid potential-temperature departure in kelvin, shape
(members, level=2, y, x): level 0 is z = 0, level 1 is z = H; y and x are in metres. Inside
:meth:`SQG.advance` the spectrum is held transposed and already on the padded grid's rows
(:meth:`SQG._to_internal`), so that the Jacobian's transforms are batched 1-D FFTs along
contiguous axes with one transposing copy each way; ``CHUNK`` members at a time go through all
their steps, so that their work arrays stay in the CPU cache (benchmarks/README.md, "sqg").
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from daflow.errors import DataError
from daflow.models.base import Model


ADVECTION = ("sqgturb", "exact")


class SQG(Model):
    """Two-level SQG turbulence (Tulloch & Smith 2009); defaults are the EnSF-paper configuration."""

    name = "sqg"
    variable = "theta"
    dims = ("level", "y", "x")
    default_dt = 1200.0
    time_units = "s"
    units = "K"
    CHUNK = 4  # members per Jacobian pass: the work arrays of 4 members fit in a 2 MB L2 cache
    work_per_value = 8  # the spectrum on the padded rows (1.5x the grid values) for the state, RK4's stage, tendency and sum

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
        positive = {"L": self.L, "H": self.H, "nsq": self.nsq, "tdiab": self.tdiab, "diff_efold": self.diff_efold,
                    "theta0": self.theta0, "g": self.g, "diff_order": self.diff_order}
        bad = [f"{k}={v:g}" for k, v in positive.items() if not v > 0] + (["f=0"] if self.f == 0 else []) + \
              ([f"r={self.r:g}"] if not self.r >= 0 else [])
        if bad:
            raise DataError(None, f"SQG needs L, H, nsq, tdiab, diff_efold, theta0, g, diff_order > 0, f != 0 and r >= 0; "
                                  f"got {', '.join(bad)}")
        if advection not in ADVECTION:
            raise DataError(None, f"SQG advection must be one of {', '.join(ADVECTION)}, got {str(advection)!r}")
        self.advection = advection
        P = 3 * N // 2
        # points of the padded grid along x: sqgturb's irfft2 makes 2 (3N/4) of its 3N/4 + 1 columns (module docstring)
        self.n_pad_x = 2 * (3 * N // 4) if advection == "sqgturb" else P
        self.advection_factor = 2.25**2 * N * N / (P * self.n_pad_x) if advection == "sqgturb" else 1.0
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

    @classmethod
    def shape_for(cls, params: dict) -> tuple[int, int, int]:
        N = int(params.get("N", cls.default("N")))  # type: ignore[call-overload]
        return (2, N, N)

    @classmethod
    def operator_bytes(cls, params: dict, itemsize: int) -> int:
        """The per-wavenumber operators on the padded rows (about 12 (N/2+1) x 3N/2 values, built in
        complex128) and the Jacobian's work arrays for ``CHUNK`` members (:meth:`_buffers`)."""
        N = cls.shape_for(params)[1]
        P = 3 * N // 2
        work = cls.CHUNK * 8 * (2 * (N // 2 + 1) * P + 2 * P * (P // 2 + 1) + P * P) * 2 * itemsize
        return 12 * (N // 2 + 1) * P * 16 + work

    def coords(self) -> dict[str, np.ndarray]:
        """level: lid height (m); y, x: grid positions (m)."""
        xy = np.arange(self.N) * (self.L / self.N)
        return {"level": np.array([0.0, self.H]), "y": xy, "x": xy.copy()}

    # --- spectral operators -------------------------------------------------------------------
    def _build_operators(self) -> None:
        N, P, half = self.N, 3 * self.N // 2, self.N // 2
        real = {"dtype": self.dtype, "device": self.device}
        self.n_pad = P
        self.cdtype = torch.complex64 if self.dtype == torch.float32 else torch.complex128
        # wavenumbers (rad/m) in the rfft2 layout: kx (1, N/2+1) along x, ky (N, 1) along y
        kx = torch.fft.rfftfreq(N, d=1.0 / N, dtype=torch.float64)[None, :] * (2 * math.pi / self.L)
        ky = torch.fft.fftfreq(N, d=1.0 / N, dtype=torch.float64)[:, None] * (2 * math.pi / self.L)
        self.kappa2 = (kx**2 + ky**2).to(**real)                                 # (N, N/2+1)
        kappa = (kx**2 + ky**2).sqrt()
        self.inversion = self._inversion(kappa).to(**real)                      # (2 i, 2 j, N, N/2+1)
        self.kappa_cutoff = math.pi * N / self.L
        self.kappa_over_cutoff = (kappa / self.kappa_cutoff).to(**real)
        # equilibrium jet (K), symmetric between the lids
        y = torch.arange(N, dtype=torch.float64) * (self.L / N)
        l0 = 2 * math.pi / self.L
        mu0 = l0 * math.sqrt(self.nsq) * self.H / self.f
        jet = -self.scale * (mu0 * 0.5 * self.U / (l0 * self.H)) / math.tanh(0.5 * mu0) * torch.cos(l0 * y)
        self.theta_eq = jet[None, :, None].expand(2, N, N).to(**real).contiguous()   # (2, N, N)
        self.theta_eq_spec = torch.fft.rfft2(self.theta_eq, norm="forward")          # (2, N, N/2+1)
        self.relax = 0.0 if math.isinf(self.tdiab) else 1.0 / self.tdiab
        self.ekman = self.r * self.scale * self.kappa2 * torch.tensor([1.0, -1.0], **real)[:, None, None]

        # The same operators in the internal layout (k = 0..N/2, padded row p = 0..P-1), see _to_internal
        rows = torch.fft.fftfreq(P, d=1.0 / P, dtype=torch.float64)                  # l of each padded row
        keep = ((rows >= -half) & (rows < half)).to(torch.float64)[None, :]          # (1, P): the N grid's rows
        k_in = kx[0, :, None]                                                         # (N/2+1, 1)
        l_in = rows[None, :] * (2 * math.pi / self.L)                                 # (1, P)
        inv = self._inversion((k_in**2 + l_in**2).sqrt()) * keep                      # (2 i, 2 j, N/2+1, P)
        cplx = {"dtype": self.cdtype, "device": self.device}
        self._inv_in = [inv[i][None].to(**cplx) for i in range(2)]                   # psi_j += inv[i, j] theta_i
        advected = keep * (torch.arange(half + 1) < half).to(torch.float64)[:, None] if self.advection == "exact" else keep
        derivative = torch.broadcast_tensors(1j * k_in * advected, 1j * l_in * advected)
        self._derivative_in = torch.stack(derivative).to(**cplx)[:, None]            # (d/dx d/dy, 1, N/2+1, P)
        mask = torch.zeros(half + 1, P, 2, dtype=torch.float64)
        mask[:half] = -self.advection_factor * keep[0, :, None]                       # Nyquist column k = N/2: 0
        if self.advection == "exact":
            mask[0, P - half, 1] = 0.0       # the (0, -N/2) coefficient kept real (module docstring)
        self._mask_in = mask.to(**real)
        self._forcing_in = (self.relax * torch.view_as_real(self._to_internal(self.theta_eq_spec[None])[0])).contiguous()
        self._ekman_in = self._to_internal(self.ekman[None].to(self.cdtype))[0].real.contiguous() if self.r else None

    def _inversion(self, kappa: torch.Tensor) -> torch.Tensor:
        """psi_j = sum_i inversion[i, j] theta_i per wavenumber magnitude ``kappa`` (float64): (2 i, 2 j, *kappa.shape)."""
        mu = kappa * (math.sqrt(self.nsq) * self.H / self.f)
        zero = mu == 0
        mu = torch.where(zero, 1.0, mu)  # the mean streamfunction is arbitrary: its coefficients are zeroed
        h_over_mu = self.H / mu / self.scale  # theta (K) -> psi (m^2/s)
        coth = torch.where(zero, 0.0, h_over_mu / torch.tanh(mu))
        csch = torch.where(zero, 0.0, h_over_mu / torch.sinh(mu))
        return torch.stack((torch.stack((-coth, -csch)), torch.stack((csch, coth))))

    def hyperdiffusion(self, dt: float) -> torch.Tensor:
        """Integrating factor exp(-(dt/diff_efold) (kappa/kappa_c)^order), (N, N/2+1), cached per dt."""
        if dt not in self._hyperdiff:
            self._hyperdiff[dt] = torch.exp(-(dt / self.diff_efold) * self.kappa_over_cutoff**self.diff_order)
        return self._hyperdiff[dt]

    def streamfunction(self, theta_spec: torch.Tensor) -> torch.Tensor:
        """psi (m^2/s) at both lids from theta (K), spectral: (..., 2, N, N/2+1) -> same shape."""
        return self.inversion[0] * theta_spec[..., :1, :, :] + self.inversion[1] * theta_spec[..., 1:, :, :]

    # --- the internal layout ------------------------------------------------------------------
    def _to_internal(self, spec: torch.Tensor) -> torch.Tensor:
        """rfft2 spectrum (members, 2, N, N/2+1) -> the internal layout (members, 2, N/2+1, P), P = 3N/2:
        transposed (column k, then row), the rows already at their place on the padded grid (l >= 0 at
        p = l, l < 0 at p = P + l, zeros between), and the Nyquist column k = N/2 conjugated, as
        sqgturb pads it. Every operation of a step is linear with real coefficients in the column
        k = N/2 (the truncated Jacobian is zero there), so holding it conjugated changes nothing else."""
        half, P = self.N // 2, self.n_pad
        out = torch.zeros(*spec.shape[:-2], half + 1, P, dtype=self.cdtype, device=spec.device)
        out[..., :half] = spec[..., :half, :].transpose(-1, -2)
        out[..., P - half:] = spec[..., self.N - half:, :].transpose(-1, -2)
        out[..., half, :] = out[..., half, :].conj()
        return out

    def _from_internal(self, theta: torch.Tensor) -> torch.Tensor:
        half, P = self.N // 2, self.n_pad
        theta = theta.clone()
        theta[..., half, :] = theta[..., half, :].conj()
        return torch.cat((theta[..., :half], theta[..., P - half:]), dim=-1).transpose(-1, -2).contiguous()

    def _buffers(self, members: int) -> dict:
        """Work arrays of one chunk of members; the zero columns of the padded spectrum stay zero."""
        c, half, P = min(members, self.CHUNK), self.N // 2, self.n_pad
        cplx = {"dtype": self.cdtype, "device": self.device}
        return {"fields": torch.empty(c, 2, 2, 2, half + 1, P, **cplx),              # (member, psi/theta, d/dx d/dy, lid, k, p)
                "padded": torch.zeros(c, 2, 2, 2, P, P // 2 + 1, **cplx),
                "psi": torch.empty(c, 2, half + 1, P, **cplx)}

    def _tendency_into(self, theta: torch.Tensor, out: torch.Tensor, work: dict) -> torch.Tensor:
        """d theta/dt without hyperdiffusion, internal layout (members, 2, N/2+1, P), written into ``out``.

        -factor J(psi, theta) dealiased on the 3N/2 grid: per lid, psi_x, psi_y, theta_x, theta_y by an
        inverse FFT along y (the padded rows) and one along x (P//2+1 columns onto ``n_pad_x`` points,
        3N/2 or, with sqgturb's advection when 3N/2 is odd, 3N/2 - 1: the N grid's Nyquist column
        k = N/2 < P/2 is an ordinary column of the padded grid), their
        product psi_x theta_y - psi_y theta_x, its forward FFTs, truncated to the N grid's
        wavenumbers with k < N/2 (the mask, times -factor).

        As sqgturb does, the Nyquist column k = N/2 enters the padded spectrum conjugated (held so,
        :meth:`_to_internal`), and the (0, -N/2) coefficient of the result keeps its imaginary part:
        a sine that vanishes on the N grid but not on the padded one, so it acts on the dynamics
        while the state stays spectral (:meth:`advance`) and is lost when the state goes through
        the grid. With advection="exact" only its real part is kept, and the Nyquist column, whose
        tendency the truncation drops, is left out of the padded fields (it would exchange energy
        with the kept wavenumbers without receiving any back): the truncated Jacobian then conserves
        the energy of any state exactly and the grid <-> spectrum round trip is lossless."""
        half = self.N // 2
        for a in range(0, theta.shape[0], self.CHUNK):
            th = theta[a:a + self.CHUNK]
            c = th.shape[0]
            fields, padded, psi = work["fields"][:c], work["padded"][:c], work["psi"][:c]
            torch.mul(self._inv_in[0], th[:, :1], out=psi)
            psi.addcmul_(self._inv_in[1], th[:, 1:])
            torch.mul(self._derivative_in, psi[:, None], out=fields[:, 0])
            torch.mul(self._derivative_in, th[:, None], out=fields[:, 1])
            padded[..., :half + 1].copy_(torch.fft.ifft(fields, dim=-1, norm="forward").transpose(-1, -2))
            grid = torch.fft.irfft(padded, n=self.n_pad_x, dim=-1, norm="forward")  # (c, psi/theta, d/dx d/dy, lid, y, x)
            product = grid[:, 0, 0] * grid[:, 1, 1]
            product.addcmul_(grid[:, 0, 1], grid[:, 1, 0], value=-1.0)
            columns = torch.fft.rfft(product, dim=-1, norm="forward")[..., :half + 1].transpose(-1, -2)
            spec = torch.fft.fft(columns, dim=-1, norm="forward")
            o = out[a:a + c]
            torch.addcmul(self._forcing_in, torch.view_as_real(spec), self._mask_in, out=torch.view_as_real(o))
            if self._ekman_in is not None:
                o.addcmul_(self._ekman_in, psi)
        if self.relax:
            out.add_(theta, alpha=-self.relax)
        return out

    def _step_internal(self, theta: torch.Tensor, dt: float, work: dict) -> torch.Tensor:
        """Classical RK4, then the hyperdiffusion factor (internal layout)."""
        k, stage, update = work["k"], work["stage"], torch.empty_like(theta)
        self._tendency_into(theta, k, work)
        torch.add(theta, k, alpha=dt / 6.0, out=update)
        for weight, shift in ((dt / 3.0, dt / 2.0), (dt / 3.0, dt / 2.0), (dt / 6.0, dt)):
            torch.add(theta, k, alpha=shift, out=stage)
            self._tendency_into(stage, k, work)
            update.add_(k, alpha=weight)
        if not math.isinf(self.diff_efold):
            update.mul_(work["hyperdiffusion"])
        return update

    def _work(self, theta: torch.Tensor, dt: float) -> dict:
        work = self._buffers(theta.shape[0])
        work["k"], work["stage"] = torch.empty_like(theta), torch.empty_like(theta)
        if not math.isinf(self.diff_efold):
            work["hyperdiffusion"] = self._to_internal(self.hyperdiffusion(dt)[None, None].to(self.cdtype))[0].real.contiguous()
        return work

    def tendency(self, theta_spec: torch.Tensor) -> torch.Tensor:
        """d theta/dt without hyperdiffusion, spectral (members, 2, N, N/2+1)."""
        theta = self._to_internal(theta_spec)
        return self._from_internal(self._tendency_into(theta, torch.empty_like(theta), self._buffers(theta.shape[0])))

    def step_spectral(self, theta_spec: torch.Tensor, dt: float) -> torch.Tensor:
        """One RK4 step of the spectral state (members, 2, N, N/2+1), then the hyperdiffusion factor."""
        theta = self._to_internal(theta_spec)
        return self._from_internal(self._step_internal(theta, float(dt), self._work(theta, float(dt))))

    def step(self, x: torch.Tensor, dt: float) -> torch.Tensor:
        """(members, 2, N, N) theta in K -> the same after one step of dt seconds."""
        return self.advance(x, dt, 1)

    def advance(self, x: torch.Tensor, dt: float, steps: int) -> torch.Tensor:
        """``steps`` steps with the state kept spectral in between, as sqgturb's ``advance`` does
        (grid -> rfft2 -> steps -> irfft2), ``CHUNK`` members at a time."""
        return next(self.trajectory(x, dt, [steps]))

    def trajectory(self, x: torch.Tensor, dt: float, counts: Iterable[int]) -> Iterator[torch.Tensor]:
        """The state after each of ``counts`` further steps, with the spectrum kept across the frames
        as in sqgturb's runs (``advance()`` without a new grid field, the grid values only written
        out): the trajectory does not depend on how often it is output. Going through the grid
        drops the imaginary part of the (0, -N/2) coefficient (:meth:`_tendency_into`), about 6e-5
        of the field's std in 12 hours when done at every step. ``CHUNK`` members at a time go
        through the steps between two frames."""
        dt = float(dt)
        spectra = [self._to_internal(torch.fft.rfft2(chunk, norm="forward")) for chunk in torch.split(x, self.CHUNK)]
        works: dict[int, dict] = {}   # scratch arrays per chunk size, shared by the chunks and the frames
        for steps in counts:
            parts = []
            for i, theta in enumerate(spectra):  # members are independent: each chunk's steps stay in cache
                if theta.shape[0] not in works:
                    works[theta.shape[0]] = self._work(theta, dt)
                work = works[theta.shape[0]]
                for _ in range(steps):
                    theta = self._step_internal(theta, dt, work)
                spectra[i] = theta
                parts.append(torch.fft.irfft2(self._from_internal(theta), s=x.shape[-2:], norm="forward"))
            yield parts[0] if len(parts) == 1 else torch.cat(parts)

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
