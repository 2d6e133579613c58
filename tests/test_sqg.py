"""SQG model: oracles from the equations (inversion, conservation laws, the jet's normal modes)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import xarray as xr
from click.testing import CliRunner

from daflow.errors import DataError
from daflow.models.sqg import SQG
from daflow_cli.main import main

DAY = 86400.0


def grid(m: SQG) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, x) positions in metres, each (N, N)."""
    xy = torch.arange(m.N, dtype=torch.float64) * (m.L / m.N)
    return torch.meshgrid(xy, xy, indexing="ij")


def to_grid(m: SQG, spec: torch.Tensor) -> torch.Tensor:
    return torch.fft.irfft2(spec, s=(m.N, m.N), norm="forward")


def to_spec(x: torch.Tensor) -> torch.Tensor:
    return torch.fft.rfft2(x, norm="forward")


def test_inversion_of_one_fourier_mode_matches_the_closed_form():
    """theta_j = a_j cos(kx + ly) at the lids: the streamfunction psi(z) solving
    psi_zz = (N kappa / f)^2 psi between the lids with psi(0) = psi_0, psi(H) = psi_1 is
    [psi_0 sinh(m (H - z)) + psi_1 sinh(m z)] / sinh(m H), m = N kappa / f, and its vertical
    derivative at the lids must equal the scaled temperatures g theta_j / (f theta0)."""
    m = SQG(dtype=torch.float64)
    y, x = grid(m)
    kx, ky = 3 * 2 * math.pi / m.L, -5 * 2 * math.pi / m.L
    wave = torch.cos(kx * x + ky * y)
    a = torch.tensor([2.0, -3.5], dtype=torch.float64)
    theta = a[:, None, None] * wave                                        # (2, N, N)
    psi = to_grid(m, m.streamfunction(to_spec(theta)))
    amp = (psi * wave).mean(dim=(-2, -1)) * 2                              # psi_j = amp_j cos(kx + ly)
    assert torch.allclose(psi, amp[:, None, None] * wave, rtol=0, atol=1e-12 * amp.abs().max())
    mz = math.sqrt(m.nsq) * math.hypot(kx, ky) / m.f
    sh, ch = math.sinh(mz * m.H), math.cosh(mz * m.H)
    dpsi_dz_bottom = mz * (-amp[0] * ch + amp[1]) / sh
    dpsi_dz_top = mz * (-amp[0] + amp[1] * ch) / sh
    b = a * m.g / (m.f * m.theta0)
    assert torch.allclose(torch.stack((dpsi_dz_bottom, dpsi_dz_top)), b, rtol=1e-12, atol=0)


@pytest.mark.parametrize("N", [64, 30])
def test_energy_and_lid_integrals_are_conserved_without_forcing(N):
    """Without relaxation, hyperdiffusion and Ekman damping the flow conserves the total energy
    and, at each lid, the integrals of theta and theta^2, from any state: sqgturb's random start
    has white noise up to the Nyquist wavenumbers, whose column k = N/2 the truncated Jacobian
    never updates. dt = 300 s keeps RK4's O(dt^5) error per step at float64 round-off while the
    state still changes by 8-20 %. N = 30: the padded grid is 45 x 45."""
    free = SQG(N=N, dtype=torch.float64, tdiab=math.inf, diff_efold=math.inf, r=0.0, advection="exact")
    x0 = free.random_state(2, torch.Generator().manual_seed(3))
    assert to_spec(x0)[..., -1].abs().max() > 1e-3 * to_spec(x0).abs().max()  # the Nyquist column is not empty
    x = x0
    for _ in range(100):
        x = free.step(x, 300.0)
    assert (x - x0).abs().max() > 0.05 * x0.abs().max()
    energy0, energy = free.energy(x0), free.energy(x)
    assert torch.all((energy / energy0 - 1).abs() < 1e-12), energy / energy0 - 1
    assert torch.allclose(x.mean(dim=(-2, -1)), x0.mean(dim=(-2, -1)), rtol=0, atol=1e-14 * x0.abs().max())
    var0, var = (x0**2).mean(dim=(-2, -1)), (x**2).mean(dim=(-2, -1))
    assert torch.all((var / var0 - 1).abs() < 1e-11), var / var0 - 1


def jet_operator(m: SQG, kx: float) -> np.ndarray:
    """Linearised lid dynamics about the equilibrium jet for zonal wavenumber kx, built from the
    equations alone. With theta_eq = A cos(l0 y) on both lids, psi_eq_j = P_j cos(l0 y) and a
    perturbation sum_n a_jn exp(i (kx x + n l0 y)) with streamfunction coefficients s_jn (the
    two-surface Eady inversion at kappa_n = |(kx, n l0)|):
        d a_jn/dt = -(kx l0 / 2) (w_j,n-1 - w_j,n+1) - a_jn / tdiab,   w_jn = P_j a_jn - A s_jn.
    Unknowns ordered (n, j) for n = -N/2 .. N/2-1, the meridional wavenumbers the model keeps."""
    n = np.arange(-m.N // 2, m.N // 2)
    l0 = 2 * math.pi / m.L

    def inversion(kappa: float) -> np.ndarray:   # psi_j = sum_i M[j, i] theta_i
        mu = kappa * math.sqrt(m.nsq) * m.H / m.f
        a = m.H / mu / m.scale
        return np.array([[-a / math.tanh(mu), a / math.sinh(mu)], [-a / math.sinh(mu), a / math.tanh(mu)]])

    amp = 2 * float(to_spec(m.theta_eq.double())[0, 1, 0].real)              # theta_eq = amp cos(l0 y)
    p = inversion(l0) @ np.array([amp, amp])
    w = [np.diag(p) - amp * inversion(math.hypot(kx, nn * l0)) for nn in n]  # (2, 2) blocks
    op = np.zeros((2 * len(n), 2 * len(n)))
    for i in range(len(n)):
        if i > 0:
            op[2 * i:2 * i + 2, 2 * i - 2:2 * i] -= kx * l0 / 2 * w[i - 1]
        if i < len(n) - 1:
            op[2 * i:2 * i + 2, 2 * i + 2:2 * i + 4] += kx * l0 / 2 * w[i + 1]
    return op - np.eye(2 * len(n)) / m.tdiab


def eady_growth_rate(m: SQG, kappa: float, shear: float) -> float:
    """Eady (1949): growth rate of the two-surface mode in uniform shear, mu = kappa N H / f."""
    mu = kappa * math.sqrt(m.nsq) * m.H / m.f
    s = (1 / math.tanh(mu / 2) - mu / 2) * (mu / 2 - math.tanh(mu / 2))
    return f_over_n(m) * shear * math.sqrt(max(s, 0.0))


def f_over_n(m: SQG) -> float:
    return m.f / math.sqrt(m.nsq)


def test_small_normal_mode_of_the_jet_grows_as_the_two_surface_dispersion_relation_says():
    """A normal mode of the jet, 1e-4 K in amplitude, evolves under the full nonlinear model as
    exp(lambda t) with the leading eigenvalue lambda of the two-surface (Eady-type) linear
    problem (growth rate and phase speed) over 3 days; the growth rates obey Eady's short-wave
    cut-off mu = 2.399 exactly and stay below the uniform-shear Eady rate at the jet's peak shear
    (by about 10 %: the jet's shear varies across the domain)."""
    m = SQG(dtype=torch.float64, diff_efold=math.inf, advection="exact")
    l0 = 2 * math.pi / m.L
    shear = m.U / m.H  # lid-to-lid wind difference U sin(l0 y), at most U
    rates = {}
    for wave in range(1, 10):
        kx = wave * 2 * math.pi / m.L
        eigenvalues = np.linalg.eigvals(jet_operator(m, kx))
        rates[wave] = eigenvalues.real.max() + 1 / m.tdiab
        eady = eady_growth_rate(m, kx, shear)
        if eady == 0.0:
            assert abs(rates[wave]) < 1e-12 * f_over_n(m) * shear, (wave, rates[wave])
        else:
            assert 0.8 * eady < rates[wave] < eady, (wave, rates[wave], eady)
    assert max(rates, key=rates.get) == 5 and rates[8] < 1e-12 < rates[7]

    kx = 5 * 2 * math.pi / m.L
    eigenvalues, vectors = np.linalg.eig(jet_operator(m, kx))
    lead = eigenvalues.real.argmax()
    lam, mode = eigenvalues[lead], vectors[:, lead].reshape(-1, 2)               # (n, lid)
    y, x = grid(m)
    n = torch.arange(-m.N // 2, m.N // 2, dtype=torch.float64)
    phases = torch.exp(1j * (kx * x[None] + n[:, None, None] * l0 * y[None]))    # (n, N, N)

    def perturbation(t: float) -> torch.Tensor:   # (2, N, N)
        coeff = torch.from_numpy(mode * np.exp(lam * t))                        # (n, lid)
        return torch.einsum("nj,nyx->jyx", coeff, phases).real

    scale = 1e-4 / float(perturbation(0.0).abs().max())
    state = (m.theta_eq + scale * perturbation(0.0))[None]
    for _ in range(216):                                                         # 3 days
        state = m.step(state, 1200.0)
    expected = scale * perturbation(3 * DAY)
    error = (state[0] - m.theta_eq - expected).abs().max() / expected.abs().max()
    assert error < 1e-3, error
    assert lam.real * 3 * DAY > 1.5  # the mode grew by more than e^1.5: the test is not trivial


class SqgturbReference:
    """sqgturb's ``SQG`` (jswhit/sqgturb, sqgturb/sqg.py: symmetric jet, dealias=True, no random
    pattern) transcribed to NumPy from its source, independently of daflow: unnormalised FFTs,
    state = scaled lid temperature b (m/s), ``specpad`` multiplying by 2.25 and ``spectrunc`` not
    dividing by it (numpy's irfft2 choosing the padded grid's x length from the 3N/4 + 1 columns, as
    sqgturb leaves it), Ekman damping + r kappa^2 psi at z = 0 and - at z = H when r >= 1e-10, RK4
    with the hyperdiffusion factor, spectrum kept between steps."""

    def __init__(self, N=64, f=1e-4, nsq=1e-4, L=20e6, H=10e3, U=30.0, r=0.0, tdiab=10 * DAY, diff_order=8,
                 diff_efold=DAY, dt=1200.0):
        self.N, self.dt, self.tdiab, self.r = N, dt, tdiab, r
        y = np.arange(0, L, L / N)
        l0 = 2 * np.pi / L
        mu0 = l0 * np.sqrt(nsq) * H / f
        pvbar = -(mu0 * 0.5 * U / (l0 * H)) * np.cosh(0.5 * mu0) * np.cos(l0 * y) / np.sinh(0.5 * mu0)
        self.pvspec_eq = np.fft.rfft2(np.broadcast_to(pvbar[None, :, None], (2, N, N)))
        k, l = np.meshgrid((N * np.fft.fftfreq(N))[: N // 2 + 1], N * np.fft.fftfreq(N))  # noqa: E741
        k, l = 2 * np.pi * k / L, 2 * np.pi * l / L  # noqa: E741
        self.ksqlsq = k**2 + l**2
        n_pad = 3 * N // 2
        k_pad, l_pad = np.meshgrid((n_pad * np.fft.fftfreq(n_pad))[: 3 * N // 4 + 1], n_pad * np.fft.fftfreq(n_pad))
        self.ik_pad, self.il_pad = 2j * np.pi * k_pad / L, 2j * np.pi * l_pad / L
        mu = (np.sqrt(k**2 + l**2) * np.sqrt(nsq) * H / f).clip(np.finfo(float).eps)
        self.h_over_mu, self.tanhmu, self.sinhmu = H / mu, np.tanh(mu), np.sinh(mu)
        self.hyperdiff = np.exp((-dt / diff_efold) * (np.sqrt(k**2 + l**2) / (np.pi * N / L)) ** diff_order)

    def invert(self, pv):
        return self.h_over_mu * np.stack((pv[1] / self.sinhmu - pv[0] / self.tanhmu,
                                          pv[1] / self.tanhmu - pv[0] / self.sinhmu))

    def specpad(self, spec):
        h, n = self.N // 2, self.N
        out = np.zeros((2, 3 * n // 2, 3 * n // 4 + 1), complex)
        out[:, :h, :h], out[:, -h:, :h] = 2.25 * spec[:, :h, :h], 2.25 * spec[:, -h:, :h]
        out[:, :h, h], out[:, -h:, h] = np.conj(2.25 * spec[:, :h, -1]), np.conj(2.25 * spec[:, -h:, -1])
        return out

    def spectrunc(self, spec):
        h = self.N // 2
        out = np.zeros((2, self.N, h + 1), complex)
        out[:, :h, :h], out[:, -h:, :h] = spec[:, :h, :h], spec[:, -h:, :h]
        return out

    def xyderiv(self, spec):
        padded = self.specpad(spec)
        return np.fft.irfft2(self.ik_pad * padded), np.fft.irfft2(self.il_pad * padded)

    def gettend(self, pvspec):
        psispec = self.invert(pvspec)
        v, u = self.xyderiv(psispec)
        pvx, pvy = self.xyderiv(pvspec)
        jacobian = self.spectrunc(np.fft.rfft2(-u * pvx + v * pvy))
        tendency = (self.pvspec_eq - pvspec) / self.tdiab - jacobian
        if self.r >= 1e-10:
            tendency[0] += self.r * self.ksqlsq * psispec[0]
            tendency[1] -= self.r * self.ksqlsq * psispec[1]
        return tendency

    def advance(self, pv: np.ndarray, steps: int) -> np.ndarray:
        spec, dt = np.fft.rfft2(pv), self.dt
        for _ in range(steps):
            k1 = dt * self.gettend(spec)
            k2 = dt * self.gettend(spec + 0.5 * k1)
            k3 = dt * self.gettend(spec + 0.5 * k2)
            k4 = dt * self.gettend(spec + k3)
            spec = self.hyperdiff * (spec + (k1 + 2 * k2 + 2 * k3 + k4) / 6)
        return np.fft.irfft2(spec)


@pytest.fixture(scope="module")
def spun_up() -> torch.Tensor:
    """A (1, 2, 64, 64) float64 state after 3 days of turbulence from sqgturb's random start."""
    m = SQG(dtype=torch.float64)
    return m.advance(m.random_state(1, torch.Generator().manual_seed(3)), 1200.0, 216)


def test_twelve_hour_forecast_reproduces_sqgturb(spun_up):
    """From the same state, 36 steps (12 h) of daflow's default SQG against the NumPy transcription of
    sqgturb: float64 within 1e-5 of the field's std (round-off, in fact), float32 within 1e-3. The
    consistent scaling (advection="exact") differs by far more: the factor 2.25 matters."""
    scale = SQG().scale
    reference = SqgturbReference().advance(spun_up[0].numpy() / scale, 36) * scale
    std = reference.std()
    for dtype, tolerance in ((torch.float64, 1e-5), (torch.float32, 1e-3)):
        x = SQG(dtype=dtype).advance(spun_up.to(dtype), 1200.0, 36)
        error = np.abs(x[0].double().numpy() - reference).max() / std
        assert error < tolerance, (dtype, error)
    exact = SQG(dtype=torch.float64, advection="exact").advance(spun_up, 1200.0, 36)
    assert np.abs(exact[0].numpy() - reference).max() / std > 0.1


BEYOND_DEFAULTS = {
    "N=32, Ekman r=1": {"N": 32, "r": 1.0},
    "N=30 (3N/2 odd)": {"N": 30},
    "N=50 (3N/2 odd), Ekman r=0.5, dt=900": {"N": 50, "r": 0.5, "dt": 900.0},
    "no relaxation, diff_order 4, other constants": {"N": 32, "tdiab": math.inf, "diff_order": 4, "diff_efold": 6 * 3600.0,
                                                    "dt": 600.0, "U": 40.0, "H": 8e3, "nsq": 2e-4, "L": 10e6},
}


@pytest.mark.parametrize("case", BEYOND_DEFAULTS.values(), ids=BEYOND_DEFAULTS.keys())
def test_twelve_hour_forecast_reproduces_sqgturb_beyond_the_defaults(case):
    """As above, from a state spun up for a day at the case's settings: other grid sizes (3N/2 odd
    included: sqgturb's padded grid is then one point narrower along x), Ekman damping on,
    relaxation off, another hyperdiffusion, time step and constants."""
    params = dict(case)
    dt = params.pop("dt", 1200.0)
    steps = round(12 * 3600 / dt)
    m = SQG(dtype=torch.float64, **params)
    x0 = m.advance(m.random_state(1, torch.Generator().manual_seed(5)), dt, round(DAY / dt))
    reference = SqgturbReference(dt=dt, **params).advance(x0[0].numpy() / m.scale, steps) * m.scale
    std = reference.std()
    for dtype, tolerance in ((torch.float64, 1e-5), (torch.float32, 1e-3)):
        x = SQG(dtype=dtype, **params).advance(x0.to(dtype), dt, steps)
        error = np.abs(x[0].double().numpy() - reference).max() / std
        assert error < tolerance, (dtype, error)
    if params.get("r"):  # the Ekman term matters: 10x the float64 bar at least
        undamped = SqgturbReference(dt=dt, **{**params, "r": 0.0}).advance(x0[0].numpy() / m.scale, steps) * m.scale
        assert np.abs(undamped - reference).max() / std > 1e-4


def test_forecast_command_output_does_not_perturb_the_run(tmp_path):
    """daflow forecast writes the frames without restarting from them (sqgturb's runs keep the
    spectrum, writing irfft2 of it): a 12-hour float64 forecast written at every step ends where one
    written once does, and agrees with the sqgturb transcription to 1e-5 of the field's std (going
    through the grid at every step would lose the (0, -N/2) sine: about 6e-5)."""
    start, every, once = tmp_path / "start.nc", tmp_path / "every.nc", tmp_path / "once.nc"
    assert run_cli(["forecast", "--model", "sqg", "--init", "random", "--dtype", "float64", "--spinup", "216",
                    "--seed", "3", "-o", str(start)]).exit_code == 0
    for out, every_k in ((every, "1"), (once, "36")):
        result = run_cli(["forecast", "--init", str(start), "--dtype", "float64", "--steps", "36", "--output-every", every_k,
                          "-o", str(out)])
        assert result.exit_code == 0, result.output
    x0 = xr.open_dataset(start)["theta"].values[-1]
    last = {k: xr.open_dataset(f)["theta"].values[-1] for k, f in (("every", every), ("once", once))}
    assert last["every"].dtype == np.float64 and np.array_equal(last["every"], last["once"])
    scale = SQG().scale
    reference = SqgturbReference().advance(x0 / scale, 36) * scale
    assert np.abs(last["every"] - reference).max() / reference.std() < 1e-5


def test_forecast_file_keeps_the_advection_and_refuses_unknown_ones(tmp_path):
    out = tmp_path / "exact.nc"
    result = run_cli(["forecast", "--model", "sqg", "--init", "random", "--param", "advection=exact", "--param", "N=16",
                      "--spinup", "2", "--steps", "1", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert '"advection": "exact"' in xr.open_dataset(out).attrs["daflow_model_params"]
    bad = run_cli(["forecast", "--model", "sqg", "--init", "random", "--param", "advection=fast", "--spinup", "0",
                   "-o", str(tmp_path / "bad.nc")])
    assert bad.exit_code == 65 and "advection" in bad.output and len(bad.output.splitlines()) == 1
    assert not (tmp_path / "bad.nc").exists()


def test_members_are_independent_and_runs_bit_reproducible():
    m = SQG()
    runs = []
    for _ in range(2):
        x = m.random_state(3, torch.Generator().manual_seed(7))
        for _ in range(20):
            x = m.step(x, 1200.0)
        runs.append(x)
    assert x.dtype == torch.float32 and x.shape == (3, 2, 64, 64)
    assert torch.equal(runs[0], runs[1])
    alone = m.random_state(3, torch.Generator().manual_seed(7))[1:2]
    for _ in range(20):
        alone = m.step(alone, 1200.0)
    assert torch.allclose(alone[0], runs[0][1], rtol=0, atol=1e-4)
    other = m.random_state(3, torch.Generator().manual_seed(8))
    assert not torch.equal(other, m.random_state(3, torch.Generator().manual_seed(7)))


def test_sqgturb_random_start():
    """Noise plus a blob on the upper lid, lid means removed, in kelvin (scaled by f theta0 / g)."""
    m = SQG()
    x = m.random_state(4, torch.Generator().manual_seed(0)).double()
    assert x.mean(dim=(-2, -1)).abs().max() < 1e-6
    scale = m.f * m.theta0 / m.g
    assert abs(float(x[:, 0].std()) / (100 * scale) - 1) < 0.02       # pure noise at the lower lid
    assert float(x[:, 1].max()) > 0.9 * 2000 * scale                   # the blob at the upper lid


def test_odd_grid_is_refused():
    with pytest.raises(DataError, match="even"):
        SQG(N=63)


def run_cli(args: list[str]):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_forecast_command_runs_sqg_and_continues_from_its_file(tmp_path):
    truth, ens = tmp_path / "truth.nc", tmp_path / "ens.nc"
    result = run_cli(["forecast", "--model", "sqg", "--init", "random", "--spinup", "36", "--steps", "72",
                      "--output-every", "36", "--seed", "1", "-o", str(truth)])
    assert result.exit_code == 0, result.output
    ds = xr.open_dataset(truth)
    theta = ds["theta"]
    assert theta.dims == ("time", "level", "y", "x") and theta.shape == (3, 2, 64, 64)
    assert theta.attrs["units"] == "K" and theta.dtype == np.float32
    assert np.allclose(ds["time"].values, [0.0, 43200.0, 86400.0])
    assert ds["y"].values[1] == pytest.approx(20.0e6 / 64) and list(ds["level"].values) == [0.0, 10.0e3]
    result = run_cli(["forecast", "--init", str(truth), "--members", "3", "--perturb", "0.5", "--steps", "3",
                      "--seed", "2", "-o", str(ens)])
    assert result.exit_code == 0, result.output
    assert xr.open_dataset(ens)["theta"].shape == (3, 4, 2, 64, 64)


def test_forecast_bad_sqg_input_exits_65(tmp_path):
    odd = run_cli(["forecast", "--model", "sqg", "--init", "random", "--param", "N=63", "--spinup", "0",
                   "-o", str(tmp_path / "odd.nc")])
    assert odd.exit_code == 65 and "even" in odd.output
    blown = tmp_path / "blown.nc"
    result = run_cli(["forecast", "--model", "sqg", "--init", "random", "--param", "U=3e5", "--spinup", "0",
                      "--steps", "200", "--seed", "1", "-o", str(blown)])
    assert result.exit_code == 65 and "at step" in result.output, result.output
    assert not blown.exists()


def test_init_file_whose_model_cannot_be_built_exits_65_naming_it(tmp_path):
    """An --init file whose stored parameters the model refuses (an odd SQG grid), or whose model is
    unknown, is a data error of that file for forecast and for assimilate's cycling: exit 65, one
    line naming the file, nothing written."""
    truth, obs, ens = tmp_path / "truth.nc", tmp_path / "obs.nc", tmp_path / "ens.nc"
    assert run_cli(["forecast", "--model", "sqg", "--init", "random", "--param", "N=8", "--spinup", "2",
                    "--steps", "2", "--seed", "1", "-o", str(truth)]).exit_code == 0
    assert run_cli(["ingest", str(truth), "--observe", "--fraction", "0.5", "--error-std", "1", "--seed", "2",
                    "-o", str(obs)]).exit_code == 0
    assert run_cli(["forecast", "--init", str(truth), "--members", "3", "--perturb", "0.5", "--seed", "3",
                    "-o", str(ens)]).exit_code == 0
    ds = xr.open_dataset(ens).load()
    params = json.loads(ds.attrs["daflow_model_params"])
    odd = ds.isel(x=slice(0, 7), y=slice(0, 7), time=[0])
    odd.attrs["daflow_model_params"] = json.dumps({**params, "N": 7})
    odd.to_netcdf(tmp_path / "odd.nc")
    unknown = ds.isel(time=[0])
    unknown.attrs["daflow_model"] = "nosuch"
    unknown.to_netcdf(tmp_path / "unknown.nc")
    for name, problem in (("odd.nc", "even grid size"), ("unknown.nc", "unknown model")):
        for command in (["forecast", "--init", str(tmp_path / name), "--steps", "1"],
                        ["assimilate", "--method", "etkf", "--obs", str(obs), "--init", str(tmp_path / name)]):
            out = tmp_path / "out.nc"
            result = run_cli([*command, "-o", str(out)])
            assert result.exit_code == 65, result.output
            assert len(result.output.splitlines()) == 1 and name in result.output and problem in result.output, result.output
            assert not out.exists()


def test_sqg_parameters_out_of_range_exit_65_and_inf_switches_a_term_off(tmp_path):
    """H = 0 or L = 0 divided by zero (exit 70); tdiab = inf and diff_efold = inf are documented as 'off'."""
    for param in ("H=0", "L=-1", "f=0", "r=-1"):
        result = run_cli(["forecast", "--model", "sqg", "--init", "random", "--param", "N=8", "--param", param,
                          "--spinup", "0", "-o", str(tmp_path / "bad.nc")])
        assert result.exit_code == 65 and f"got {param}" in result.output, result.output
    result = run_cli(["forecast", "--model", "sqg", "--init", "random", "--param", "N=8", "--param", "tdiab=inf",
                      "--param", "diff_efold=inf", "--spinup", "0", "--steps", "2", "-o", str(tmp_path / "off.nc")])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "bad.nc").exists()
