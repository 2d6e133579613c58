"""Forecasts and analyses with a trained generative model (``--model storm`` / ``--method storm``).

Sampling the target frame given the K history frames, without observations, is a forecast step;
repeating it with the new frame appended to the history is an autoregressive forecast. Sampling
it with the likelihood of the observations at its time (MMPS, SDA or DPS guidance, see
:mod:`daflow.nn.diffusion`) is a one-stage analysis: the posterior p(x_t | x_{t-K..t-1}, y_t).
With T > 1 target frames the analysis samples the whole window jointly with the observations at
any of its frames (a 4D window), ``lag`` of its frames before the analysis time being re-analysed
and those after it a look-ahead (:class:`GenerativeAnalysis`, ``--lag``).
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

import dataclasses
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import torch
import xarray as xr

from daflow.core.grid import StateGrid
from daflow.core.observations import ObsBatch, observation_batches
from daflow.errors import DataError, OptionError
from daflow.nn.checkpoint import load_denoiser
from daflow.nn.data import Series, check_matches, read_series
from daflow.nn.diffusion import Denoiser, posterior_sample
from daflow.nn.normalisation import Normalisation
from daflow.nn.sequence import SequenceGroup, shared_seed
from daflow.nn.training import history_perturbation, parallel_groups
from daflow.seeding import resolve_seed


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
        self.checkpoint: str | None = checkpoint
        self.sample_steps, self.churn = sample_steps, churn
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

    @property
    def sequence(self) -> SequenceGroup | None:
        """The network's sequence-parallel group (None on one process, or for a denoiser without one)."""
        return getattr(getattr(self.denoiser, "net", None), "sequence", None)

    def read(self, ds: xr.Dataset, path=None) -> Series:
        """A state dataset's series (``path`` names it in errors), checked against the training data and long enough for the history."""
        series = read_series(ds, self.config["data"]["variable"] if "data" in self.config else None, path)
        if "data" in self.config:
            check_matches(series, self.config["data"], path, self.checkpoint)
        grid = (self.arch.levels, self.arch.ny, self.arch.nx)
        if tuple(series.frames.shape[2:]) != grid:
            raise DataError(path, f"(levels, rows, columns) {tuple(series.frames.shape[2:])} do not match the model's {grid}")
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
        mapped to physical frames for the observation operator and for the output, x = m + s r or
        x = x_{t-1} + s_inc sum r (m: mu, or the domain mean of the last history frame).
        """
        if self.history_inflation > 0:  # (members, 1, C, ny, nx) normalised -> physical, the same for the K frames
            history = history + self.norm.std.reshape(-1, 1, 1) * history_perturbation(
                history.shape[0], history.shape[2:], self.arch.patch, self.history_inflation, generator)
        last = history[:, -1:]  # (members, 1, C, ny, nx)
        context = self.norm.normalise(history, last)  # about mu, or about the domain mean of ``last``
        shape = (self.arch.target, *history.shape[2:])
        # the target is normalised (mean 0, standard deviation 1 by construction): no estimate of its moments
        settings = {"steps": self.sample_steps, "churn": self.churn, "data_mean": 0.0, "data_std": 1.0,
                    "sigma_min": 0.002, **settings}  # storm's schedule as measured (benchmarks/README.md)

        def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            return self.denoiser(context, x, sigma)

        observe: Callable[[torch.Tensor], torch.Tensor] | None = None
        value = error = None
        if obs:
            bad = [f for f, _ in obs if not 0 <= f < self.arch.target]
            if bad:
                raise DataError(None, f"observations at window frame {bad[0]}; the model's window has "
                                f"{self.arch.target} target frame(s)")
            cells = history.shape[-2] * history.shape[-1]

            def observe_window(r: torch.Tensor) -> torch.Tensor:  # (B, T, C, ny, nx) target -> (B, n_obs)
                physical = self.norm.to_physical(r, last)
                return torch.cat([b.apply(physical[:, f].reshape(physical.shape[0], -1)) for f, b in obs], dim=1)
            observe = observe_window
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
    generator = _generator(shared_seed(seed, model.sequence))
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


class GenerativeDynamics:
    """The trained model as a :class:`daflow.core.protocols.Dynamics` that carries its past frames.

    ``step(x, dt)`` samples the frame after ``x`` given the K frames ending at ``x`` and appends it.
    ``frames`` (members, N, C, ny, nx) holds the given initial frames, then every frame sampled or
    analysed since (the last K + T: enough history for a window reaching T - 1 frames back, T the
    model's target frames); frames from index ``given`` on may be re-analysed (:class:`GenerativeAnalysis`).
    """

    name = "storm"
    time_units = "s"

    def __init__(self, model: GenerativeModel, series: Series, members: int, generator: torch.Generator):
        self.model, self.series, self.generator = model, series, generator
        self.variable = series.variable
        self.dims = ("level", *series.dims[-2:])
        self.state_shape = tuple(series.frames.shape[2:])
        self.frames = model.history(series, members)                             # the last K given frames
        self.given = self.frames.shape[1]
        self.x = self.frames[:, -1]

    def coords(self) -> dict[str, np.ndarray]:
        return {"level": self.series.coords.get("level", np.zeros(1)), **self.series.coords}

    def step(self, x: torch.Tensor, dt: float) -> torch.Tensor:
        arch = self.model.arch
        frames = torch.cat([self.frames[:, :-1], x[:, None]], dim=1)
        with torch.no_grad():
            new = self.model.next_frames(frames[:, -arch.history:], self.generator)[:, 0]
        drop = max(frames.shape[1] + 1 - (arch.history + arch.target), 0)
        self.frames, self.given = torch.cat([frames[:, drop:], new[:, None]], dim=1), max(self.given - drop, 0)
        return new

    def revise(self, start: int, frames: torch.Tensor) -> None:
        """Replace the frames from index ``start`` to the latest by ``frames`` (members, N - start, C, ny, nx)."""
        self.frames = torch.cat([self.frames[:, :start], frames], dim=1)

    def dataset(self, frames: torch.Tensor, times: np.ndarray, title: str) -> xr.Dataset:
        """The analysis dataset of (time, members, C, ny, nx) frames in the layout of the input series."""
        ds = self.model.dataset(self.series, frames.transpose(0, 1).numpy(), np.array([_seconds(t) for t in times]))
        ds.attrs["title"] = title
        return ds


class GenerativeAnalysis:
    """storm's analysis as a :class:`daflow.core.protocols.Analysis`: a posterior sample of the model's
    window of T target frames given the K frames before it and every observation in it (MMPS, SDA or
    DPS guidance; ``settings``: those of :func:`daflow.nn.diffusion.posterior_sample`).

    The window is placed so that ``lag`` = L of its frames (0 <= L <= T - 1) precede the analysis
    time t: it covers t - L .. t + T - 1 - L (moved later while it would reach the given initial
    frames). The frames before t are re-analysed with the observations of the whole window and
    replace the earlier analyses (a reanalysis: a fixed-lag smoother), and the observations of the
    T - 1 - L frames after t (``lookahead``) correct the analysis at t through the learned dynamics;
    those later frames are discarded, the cycle forecasting them afresh from the analysis. With
    T = 1 this is the filter p(x_t | x_{t-K..t-1}, y_t).
    """

    name: ClassVar[str] = "storm"
    min_members: ClassVar[int] = 1
    differentiates: ClassVar[bool] = True  # DPS guidance differentiates through the denoiser: no inference mode around the cycle

    def __init__(self, dynamics: GenerativeDynamics, guidance: str = "mmps", gamma: float = 1e-2, zeta: float = 1.0,
                 lag: int = 0, **settings):
        target = dynamics.model.arch.target
        if not 0 <= lag < target:
            raise OptionError("lag", f"is {lag}; the model's window has {target} target frame(s), so the lag is 0 to {target - 1}")
        self.dynamics, self.guidance, self.gamma, self.zeta = dynamics, guidance, gamma, zeta
        self.lag, self.lookahead = lag, target - 1 - lag
        self.settings = {"guidance": guidance, "gamma": gamma, "zeta": zeta, **settings}

    def transform(self, background: torch.Tensor, obs: ObsBatch) -> torch.Tensor:
        return self.transform_span(background, [(0, obs)])[0]

    def transform_span(self, background: torch.Tensor, span: list[tuple[int, ObsBatch]]) -> dict[int, torch.Tensor]:
        """The analyses (members, n) of the window's frames up to the analysis time, keyed by their offset
        in model steps from it (0: the analysis time; < 0: re-analysed earlier frames), from the
        observations of ``span``: (offset, batch) pairs, offsets from -lag to lookahead."""
        dyn, arch = self.dynamics, self.dynamics.model.arch
        latest = dyn.frames.shape[1] - 1
        if latest < dyn.given:
            time = next(b.time for o, b in span if o == 0)
            raise DataError(None, f"observation time {time} is the initial time; storm analyses the frames after it")
        start = max(latest - self.lag, dyn.given)
        at = latest - start  # the analysis time's frame in the window
        pairs = [(at + o, b) for o, b in span if 0 <= at + o < arch.target]
        with torch.no_grad():
            window = dyn.model.next_frames(dyn.frames[:, start - arch.history:start], dyn.generator, pairs, **self.settings)
        dyn.revise(start, window[:, :at + 1])
        return {f - at: window[:, f].reshape(background.shape) for f in range(at + 1)}

    def attrs(self) -> dict:
        model = self.dynamics.model
        attrs = {"daflow_method": "storm", "guidance": self.guidance, "sample_steps": model.sample_steps,
                 "history_inflation": model.history_inflation, "window_frames": model.arch.target, "lag": self.lag,
                 "lookahead": self.lookahead,
                 **{k: v for k, v in self.settings.items() if k not in ("gamma", "zeta", "guidance")}}
        if self.guidance in ("sda", "dps"):
            attrs["guidance_gamma" if self.guidance == "sda" else "guidance_zeta"] = self.gamma if self.guidance == "sda" else self.zeta
        return attrs


def assimilate(checkpoint: str | GenerativeModel, obs: xr.Dataset, members: int = 1, background: xr.Dataset | None = None,
               init: xr.Dataset | None = None, seed: int | None = None, guidance: str = "mmps", gamma: float = 1e-2,
               zeta: float = 1.0, sample_steps: int = 24, history_inflation: float = 0.0, sequence_parallel: int = 1,
               names: dict | None = None, churn: float = 0.0, cg_iterations: int = 8, lag: int = 0) -> xr.Dataset:
    """Posterior ensemble(s) with observation-space diagnostics (exactly one of ``background``, ``init``),
    through the one cycle of :mod:`daflow.core.cycle`.

    ``background``: one analysis at its last time, given its K previous frames (its last frame
    unused: one cycle from the frames before it). ``init``: cycle from its last K frames through every observation time
    after them; between observation times the model samples unguided frames (a forecast), and
    every history is the method's own previous analyses and forecasts, never a given field. At each
    analysis time the background is the unguided sample from the history the analysis is
    conditioned on (what O-B and the background H(x) are computed from). Each analysis samples the
    model's window of T target frames: ``lag`` (0 .. T - 1) of them before the analysis time are
    re-analysed, and the observations of the T - 1 - lag after it correct it (:class:`GenerativeAnalysis`).
    ``checkpoint``: a trained model directory, or a :class:`GenerativeModel` in memory (its own
    sampler steps and history inflation).
    ``guidance``, ``gamma``, ``zeta``, ``churn``, ``cg_iterations``: the sampler's
    (:class:`daflow.nn.diffusion.SamplerSettings`; MMPS by default).
    ``sequence_parallel`` = P > 1 (under torchrun): each window's tokens split across P processes,
    which all draw the same noises and hold the same (replicated) ensemble.
    """
    from daflow.core.cycle import cycle
    from daflow.core.state import State

    names = names or {}
    if (init is None) == (background is None):
        raise OptionError("init", "give exactly one of init (cycling) and background (one analysis)")
    model = checkpoint if isinstance(checkpoint, GenerativeModel) else \
        GenerativeModel(checkpoint, sample_steps, history_inflation=history_inflation, sequence_parallel=sequence_parallel)
    obs_path, init_name, background_name = names.get("obs"), names.get("init"), names.get("background")
    start = background if background is not None else init
    assert start is not None
    series = model.read(start, background_name if background is not None else init_name)
    grid = StateGrid(series.variable, ("level", *series.dims[-2:]), series.frames.shape[2:],
                     {"level": series.coords.get("level", np.zeros(1)), **series.coords})
    located = obs if "level" in series.dims else obs.assign(level=("obs", np.zeros(obs.sizes["obs"])))
    batches = observation_batches(located, grid, obs_path, torch.float32)
    dt = model.config["data"]["time_step"] if "data" in model.config else series.time_step
    if background is not None:  # one cycle from the frames before the last, to the observations at the last time
        if series.frames.shape[1] < model.arch.history + 1:
            raise DataError(background_name, f"needs {model.arch.history} history frames before the analysis time")
        batch = {_seconds(b.time): b for b in batches}.get(series.seconds[-1])
        if batch is None:
            raise DataError(obs_path, f"no good observation at the analysis time {series.seconds[-1]} (the background's last time)")
        obs = obs.isel(obs=batch.rows)
        batches = observation_batches(located.isel(obs=batch.rows), grid, obs_path, torch.float32)
        series = dataclasses.replace(series, frames=series.frames[:, :-1], seconds=series.seconds[:-1])
    times = [series.seconds[-1]] + [_seconds(b.time) for b in batches]
    gaps = [round((b - a) / dt) for a, b in zip(times, times[1:])]
    if times[1] <= times[0]:
        raise DataError(obs_path, f"observation time {times[1]} is not after {init_name}'s last time {times[0]}: outside "
                        "every analysis window (storm analyses the frames after the initial ones)")
    bad = [b for a, b, g in zip(times, times[1:], gaps) if g < 1 or abs(b - a - g * dt) > 1e-6 * dt]
    if bad:
        raise DataError(obs_path, f"observation time {bad[0]} is not a whole number of model steps ({dt} s) "
                        f"after the previous analysis time (the first after {init_name}'s last time {times[0]})")
    dynamics = GenerativeDynamics(model, series, members, _generator(shared_seed(seed, model.sequence)))
    last = series.seconds[-1]
    clock = np.datetime64(int(round(last * 1e9)), "ns") if series.calendar else float(last)
    state = State(dynamics, dt, dynamics.x, clock, True)  # type: ignore[arg-type]
    analysis = GenerativeAnalysis(dynamics, guidance, gamma, zeta, lag, churn=churn, cg_iterations=cg_iterations)
    return cycle(state, obs, analysis, batches, names=(init_name or background_name, obs_path))


def _seconds(time) -> float:
    time = np.asarray(time)
    return float(time.astype("datetime64[ns]").astype(np.int64) / 1e9) if np.issubdtype(time.dtype, np.datetime64) else float(time)


def _generator(seed: int | None) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(resolve_seed(seed))
    return generator
