"""Forecasts and analyses with a trained generative model (``--model storm`` / ``--method storm``).

Sampling the target frame given the K history frames, without observations, is a forecast step;
repeating it with the new frame appended to the history is an autoregressive forecast. Sampling
it with the likelihood of the observations in its window (MMPS, SDA or DPS guidance, see
:mod:`daflow.nn.diffusion`) is a one-stage analysis: the posterior p(x_t | x_{t-K..t-1}, y_t).
Every member is an independent sample (its own noise, its own history when the history is an
ensemble), so M members are an ensemble from one batched sampling.

History inflation (``history_inflation`` = s, off by default): before every sampling each member's
history frames get their own smooth random field of RMS s (in units of the data's standard
deviation; :func:`daflow.nn.training.history_perturbation`), the additive inflation of ensemble
DA applied to the conditioning. Cycled, the history is the method's own analyses; their error is
largely common to the members and the network, which regenerates the field from the history, does
not carry the members' differences forward, so without it the ensemble under-disperses (ERA5 t2m,
5% observed: spread/skill 0.62 cycled against 0.85 from true histories, 0.78 cycled with s = 0.8;
benchmarks/README.md).
"""
from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from daflow.core.cycle import DIAGNOSTICS, add_observation_diagnostics
from daflow.core.grid import StateGrid
from daflow.core.observations import Diagnostics, ObsBatch, observation_batches
from daflow.errors import DataError, OptionError
from daflow.nn.checkpoint import load_denoiser
from daflow.nn.data import Series, check_matches, read_series
from daflow.nn.diffusion import Denoiser, posterior_sample
from daflow.nn.normalisation import Normalisation
from daflow.nn.training import history_perturbation, parallel_groups


class GenerativeModel:
    """A trained denoiser with the normalisation of its training data; works in physical units."""

    def __init__(self, checkpoint: str, sample_steps: int = 24, churn: float = 0.0, history_inflation: float = 0.0,
                 sequence_parallel: int = 1):
        self.denoiser, self.config = load_denoiser(checkpoint)
        if sequence_parallel > 1:  # under torchrun: every window's tokens split across P processes (daflow.nn.sequence)
            try:
                self.denoiser.net.split(parallel_groups(sequence_parallel)[2])
            except ValueError as err:
                raise DataError(checkpoint, str(err)) from None
        self.checkpoint, self.sample_steps, self.churn = checkpoint, sample_steps, churn
        self.history_inflation = history_inflation
        self.arch = self.denoiser.arch
        self.norm = Normalisation.from_dict(self.config["normalisation"])

    @classmethod
    def of(cls, denoiser: Denoiser, norm: Normalisation, sample_steps: int = 24, churn: float = 0.0) -> GenerativeModel:
        """A model from a denoiser in memory (no checkpoint, no training data to check against)."""
        model = cls.__new__(cls)
        model.denoiser, model.config, model.checkpoint = denoiser, {}, None
        model.sample_steps, model.churn, model.history_inflation = sample_steps, churn, 0.0
        model.arch, model.norm = denoiser.arch, norm
        return model

    def read(self, ds: xr.Dataset, path=None) -> Series:
        """A state dataset's series (``path`` names it in errors), checked against the training data and long enough for the history."""
        series = read_series(ds, self.config["data"]["variable"], path)
        check_matches(series, self.config["data"], path, self.checkpoint)
        if series.frames.shape[1] < self.arch.history:
            raise DataError(path, f"has {series.frames.shape[1]} time(s); the model needs {self.arch.history} history frames")
        return series

    def history(self, series: Series, members: int, end: int | None = None) -> torch.Tensor:
        """(members, K, C, ny, nx) physical history: the K frames before index ``end`` (default: the last K)."""
        end = series.frames.shape[1] if end is None else end
        frames = torch.from_numpy(series.frames[:, end - self.arch.history:end])
        if frames.shape[0] not in (1, members):
            raise DataError(None, f"history has {frames.shape[0]} members; give --members {frames.shape[0]} or a single state")
        return frames.expand(members, *frames.shape[1:]).clone()

    def next_frames(self, history: torch.Tensor, generator: torch.Generator,
                    obs: list[tuple[int, ObsBatch]] | None = None, **settings) -> torch.Tensor:
        """(members, T, C, ny, nx) physical samples of the T target frames given a physical history (members, K, C, ny, nx).

        ``obs``: (frame, batch) pairs, the observations of ``batch`` being of target frame ``frame``
        (0 .. T-1), all assimilated jointly, so that observations of a later frame correct the earlier
        ones through the learned dynamics (a 4D window). ``settings``: those of
        :func:`daflow.nn.diffusion.posterior_sample` (MMPS guidance by default). The sampler works on
        the network's target r (the state or the increment, see :mod:`daflow.nn.normalisation`); r is
        mapped to physical frames for the observation operator and for the output, x = mu + s r or
        x = x_{t-1} + s_inc sum r.
        """
        if self.history_inflation > 0:  # (members, 1, C, ny, nx) normalised -> physical, the same for the K frames
            history = history + self.norm.std.reshape(-1, 1, 1) * history_perturbation(
                history.shape[0], history.shape[2:], self.arch.patch, self.history_inflation, generator)
        last = history[:, -1:]  # (members, 1, C, ny, nx)
        context = self.norm.normalise(history)
        shape = (self.arch.target, *history.shape[2:])
        settings = {"steps": self.sample_steps, "churn": self.churn, **settings}

        def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            return self.denoiser(context, x, sigma)

        observe = value = error = None
        if obs:
            bad = [f for f, _ in obs if not 0 <= f < self.arch.target]
            if bad:
                raise DataError(None, f"observations at window frame {bad[0]}; the model's window has "
                                f"{self.arch.target} target frame(s)")
            cells = history.shape[-2] * history.shape[-1]

            def observe(r: torch.Tensor) -> torch.Tensor:  # (B, T, C, ny, nx) target -> (B, n_obs)
                physical = self.norm.to_physical(r, last)
                return torch.cat([b.apply(physical[:, f].reshape(physical.shape[0], -1)) for f, b in obs], dim=1)
            value = torch.cat([b.value for _, b in obs]).float()
            error = torch.cat([b.error_std for _, b in obs]).float()
            scale = torch.cat([self.norm.target_scale[b.index // cells] for _, b in obs])  # s or s_inc of each observed level
            settings.setdefault("scale", scale)
        with torch.no_grad():
            out = posterior_sample(denoise, shape, observe, value, error, members=history.shape[0],
                                   generator=generator, **settings)
        return self.norm.to_physical(out.to(history.dtype), last)

    def dataset(self, series: Series, frames: np.ndarray, seconds: np.ndarray) -> xr.Dataset:
        """State dataset of (member, time, C, ny, nx) physical frames in the layout of ``series``."""
        values = frames if "level" in series.dims else frames[:, :, 0]
        time = (seconds * 1e9).astype("datetime64[ns]") if series.calendar else seconds
        ds = xr.Dataset({series.variable: (("member", "time", *series.dims), values.astype(np.float32), series.attrs)},
                        coords={"member": np.arange(frames.shape[0]), "time": time, **series.coords})
        ds["member"].attrs["standard_name"] = "realization"
        ds.attrs["daflow_checkpoint"] = str(self.checkpoint)
        return ds


def forecast(checkpoint: str, init: xr.Dataset, steps: int, members: int, seed: int | None = None,
             sample_steps: int = 24, sequence_parallel: int = 1, source=None) -> xr.Dataset:
    """Autoregressive generative ensemble forecast: the init dataset's last frame, then ``steps`` sampled frames."""
    model = GenerativeModel(checkpoint, sample_steps, sequence_parallel=sequence_parallel)
    series = model.read(init, source)
    generator = _generator(seed)
    history = model.history(series, members)
    frames = [history[:, -1:]]
    with torch.no_grad():
        while sum(f.shape[1] for f in frames) < steps + 1:
            new = model.next_frames(history, generator)
            frames.append(new)
            history = torch.cat([history, new], dim=1)[:, -model.arch.history:]
    dt = model.config["data"]["time_step"]
    seconds = series.seconds[-1] + dt * np.arange(steps + 1)
    return model.dataset(series, torch.cat(frames, dim=1)[:, :steps + 1].numpy(), seconds)


def assimilate(checkpoint: str, obs: xr.Dataset, members: int = 1, background: xr.Dataset | None = None,
               init: xr.Dataset | None = None, seed: int | None = None, guidance: str = "mmps", gamma: float = 1e-2,
               zeta: float = 1.0, sample_steps: int = 24, history_inflation: float = 0.0, sequence_parallel: int = 1,
               names: dict | None = None, churn: float = 0.0, cg_iterations: int = 8) -> xr.Dataset:
    """Posterior ensemble(s) with observation-space diagnostics (exactly one of ``background``, ``init``).

    Every analysis samples the model's window of T target frames starting at the analysis time,
    guided by all the observations whose times fall in it (frame k: k model steps later): with T > 1,
    observations up to T - 1 steps ahead correct the analysis through the learned dynamics (a
    fixed-lag smoother); the analysis time's frame is the output.
    ``background``: one analysis at its last time, given its K previous frames (observations at that
    time are not required if later frames of the window have some). ``init``: cycle from its last K
    frames through every observation time after them; between observation times the model samples
    unguided frames (a forecast), and every history is the method's own previous analyses and
    forecasts, never a given field. At each analysis time the background is an unguided sample from
    the same history (what O-B and the background H(x) are computed from). ``guidance``, ``gamma``,
    ``zeta``, ``churn``, ``cg_iterations``: the sampler's (:class:`daflow.nn.diffusion.SamplerSettings`).
    ``sequence_parallel`` = P > 1 (under torchrun): each window's tokens split across P processes,
    which all draw the same noises and hold the same (replicated) ensemble.
    """
    names = names or {}
    if (init is None) == (background is None):
        raise OptionError("init", "give exactly one of init (cycling) and background (one analysis)")
    model = GenerativeModel(checkpoint, sample_steps, history_inflation=history_inflation, sequence_parallel=sequence_parallel)
    obs_path, init_name, background_name = names.get("obs"), names.get("init"), names.get("background")
    start = background if background is not None else init
    assert start is not None
    series = model.read(start, background_name if background is not None else init_name)
    grid = StateGrid(series.variable, ("level", *series.dims[-2:]), series.frames.shape[2:],
                     {"level": series.coords.get("level", np.zeros(1)), **series.coords})
    located = obs if "level" in series.dims else obs.assign(level=("obs", np.zeros(obs.sizes["obs"])))
    batches = observation_batches(located, grid, obs_path, torch.float32)
    generator = _generator(seed)
    dt = model.config["data"]["time_step"]
    window = model.arch.target
    settings = {"guidance": guidance, "gamma": gamma, "zeta": zeta, "churn": churn, "cg_iterations": cg_iterations}
    if background is not None:
        if series.frames.shape[1] < model.arch.history + 1:
            raise DataError(background_name, f"needs {model.arch.history} history frames before the analysis time")
        t0 = series.seconds[-1]
        ahead = [(round((_seconds(b.time) - t0) / dt), b) for b in batches]
        ahead = [(k, b) for k, b in ahead if 0 <= k < window and abs(_seconds(b.time) - t0 - k * dt) <= 1e-6 * dt]
        if not ahead:
            raise DataError(obs_path, f"no good observation in the analysis window: {window} model step(s) of {dt} s "
                            f"from the analysis time {t0} (the background's last time)")
        history, steps = model.history(series, members, end=-1), [(t0, 1, ahead)]
    else:
        history = model.history(series, members)
        times = [series.seconds[-1]] + [_seconds(b.time) for b in batches]
        gaps = [round((b - a) / dt) for a, b in zip(times, times[1:])]
        bad = [b for a, b, g in zip(times, times[1:], gaps) if g < 1 or abs(b - a - g * dt) > 1e-6 * dt]
        if bad:
            raise DataError(obs_path, f"observation time {bad[0]} is not a whole number of model steps ({dt} s) "
                            f"after the previous analysis time (the first after {init_name}'s last time {times[0]})")
        offsets = np.cumsum(gaps)
        steps = [(times[i + 1], gaps[i], [(int(offsets[j] - offsets[i]), batches[j]) for j in range(i, len(batches))
                                          if offsets[j] - offsets[i] < window]) for i in range(len(batches))]
    analyses, hx_background, hx_analysis, used_batches = [], [], [], []
    with torch.no_grad():
        for _, gap, ahead in steps:
            for _ in range(gap - 1):  # forecast to the step before the analysis time
                history = torch.cat([history, model.next_frames(history, generator)[:, :1]], dim=1)[:, 1:]
            first = model.next_frames(history, generator)
            analysis = model.next_frames(history, generator, ahead, **settings)
            for k, batch in ahead if background is not None else ahead[:1]:  # diagnostics of the batches analysed here
                hx_background.append(batch.apply(first[:, k].reshape(members, -1)))
                hx_analysis.append(batch.apply(analysis[:, k].reshape(members, -1)))
                used_batches.append(batch)
            analyses.append(analysis[:, 0])
            history = torch.cat([history, analysis[:, :1]], dim=1)[:, 1:]
    diag = Diagnostics.of(torch.cat(hx_background, 1), torch.cat(hx_analysis, 1))
    rows = np.concatenate([b.rows for b in used_batches])
    used = obs.isel(obs=rows) if background is not None else obs
    diagnostics = {}
    for name in DIAGNOSTICS:
        full = torch.full((used.sizes["obs"],), float("nan"))
        full[torch.from_numpy(rows) if background is None else slice(None)] = getattr(diag, name)
        diagnostics[name] = full
    ds = model.dataset(series, torch.stack(analyses, 1).numpy(), np.array([t for t, _, _ in steps]))
    add_observation_diagnostics(ds, used, diagnostics)
    ds.attrs.update({"title": "storm analysis", "daflow_method": "storm", "guidance": guidance,
                     "sample_steps": sample_steps, "history_inflation": history_inflation, "window": window,
                     "churn": churn} | ({"cg_iterations": cg_iterations} if guidance == "mmps" else {}))
    if guidance in ("sda", "dps"):
        ds.attrs["guidance_gamma" if guidance == "sda" else "guidance_zeta"] = gamma if guidance == "sda" else zeta
    return ds


def _seconds(time) -> float:
    time = np.asarray(time)
    return float(time.astype("datetime64[ns]").astype(np.int64) / 1e9) if np.issubdtype(time.dtype, np.datetime64) else float(time)


def _generator(seed: int | None) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(seed) if seed is not None else generator.seed()
    return generator
