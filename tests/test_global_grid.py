"""Global latitude-longitude grids: patches and position codes wrap round the date line, the loss is cos(lat)-weighted."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from daflow.io.contract import open_dataset, write_dataset
from daflow.nn.data import read_series
from daflow.nn.training import sphere, train
from daflow.nn.transformer import Architecture, PatchEmbedding, SpaceTimeEncoding

LAT = np.array([-75.0, -45.0, -15.0, 15.0, 45.0, 75.0])


def _series(tmp_path, lon: np.ndarray, times: int = 12):
    """A field smooth across the date line: cos(lon) cos(lat), drifting eastwards."""
    t = np.arange(times)
    field = np.cos(np.radians(lon[None, None, :] - 10.0 * t[:, None, None])) * np.cos(np.radians(LAT))[None, :, None]
    ds = xr.Dataset({"t2m": (("time", "lat", "lon"), 280 + 5 * field, {"units": "K"})},
                    coords={"time": ("time", 3600.0 * t, {"units": "s"}), "lat": LAT, "lon": lon})
    path = tmp_path / f"field{lon.size}.nc"
    write_dataset(ds, path, "state")
    return read_series(open_dataset(str(path), ("state",)), None, str(path)), path


def test_only_a_whole_circle_of_longitudes_is_global(tmp_path):
    weights = sphere(_series(tmp_path, np.arange(0.0, 360.0, 36.0))[0])
    expected = np.cos(np.radians(LAT)) / np.cos(np.radians(LAT)).mean()
    np.testing.assert_allclose(weights[:, 0].numpy(), expected, rtol=1e-6)
    assert sphere(_series(tmp_path, np.arange(-180.0, 180.0, 30.0))[0]) is not None
    assert sphere(_series(tmp_path, np.arange(0.0, 361.0, 36.0))[0]) is None   # 0 and 360 both: 11 points, not a circle
    assert sphere(_series(tmp_path, np.arange(-10.0, 20.0, 3.0))[0]) is None   # regional


def test_patches_and_codes_continue_across_the_date_line():
    """10 longitudes, patches of 4: the third patch column holds longitudes 8, 9 and (wrapped) 0, 1."""
    arch = Architecture(levels=1, ny=6, nx=10, history=1, patch=4, width=24, wrap=True)
    frames = torch.cos(torch.deg2rad(torch.arange(10) * 36.0)).expand(1, 1, 1, 6, 10)  # smooth across the date line
    patches = PatchEmbedding(arch).patches(frames).reshape(1, 1, 2, 3, 4, 4)  # (B, frames, gy, gx, p, p)
    wrapped = torch.cos(torch.deg2rad(torch.tensor([8, 9, 10, 11]) * 36.0))
    torch.testing.assert_close(patches[0, 0, 0, 2, 0], wrapped)
    edge = PatchEmbedding(Architecture(levels=1, ny=6, nx=10, history=1, patch=4)).patches(frames).reshape(1, 1, 2, 3, 4, 4)
    torch.testing.assert_close(edge[0, 0, 0, 2, 0], wrapped[[0, 1, 1, 1]])  # a regional grid repeats its edge

    for wrap, seam in ((True, False), (False, True)):
        code = SpaceTimeEncoding(Architecture(levels=1, ny=40, nx=64, history=1, patch=4, width=48, wrap=wrap)).code
        columns = code[:16, 32:48]  # the first row of patches, column part of the code: 16 columns
        neighbour, across = (columns[1] - columns[0]).norm(), (columns[15] - columns[0]).norm()
        assert (across > 2 * neighbour) == seam
        if wrap:
            torch.testing.assert_close(across, neighbour)


def test_training_on_a_global_grid_wraps_and_weights_by_area(tmp_path):
    series, path = _series(tmp_path, np.arange(0.0, 360.0, 30.0))
    config = tmp_path / "tiny.toml"
    config.write_text("[architecture]\nwidth = 12\ndepth = 1\nheads = 2\npatch = 3\n[training]\nbatch_size = 8\n")
    result = train(series, 2, 1, str(tmp_path / "global"), str(config), source=str(path), seed=1)
    assert result["architecture"]["wrap"] is True
    regional, path = _series(tmp_path, np.arange(0.0, 60.0, 5.0))
    assert train(regional, 2, 1, str(tmp_path / "regional"), str(config), source=str(path), seed=1)["architecture"]["wrap"] is False


def test_area_weighted_loss_counts_polar_errors_by_their_area():
    """With the network replaced by its target, the loss is sum over rows of cos(lat) x the row's error."""
    from daflow.nn.diffusion import score_matching_loss

    area = torch.tensor(np.cos(np.radians(LAT)) / np.cos(np.radians(LAT)).mean()).float()[:, None]
    target = torch.zeros(1, 1, 1, 6, 4)

    def denoiser(history, noisy, sigma):  # wrong by 1 in the polar row only
        out = torch.zeros_like(noisy)
        out[..., 0, :] = 1.0
        return out

    loss = score_matching_loss(denoiser, target, target, torch.zeros(1), torch.zeros_like(target), area)
    sigma = np.exp(-1.2)
    weight = (sigma**2 + 1) / sigma**2
    assert float(loss) == pytest.approx(weight * area[0, 0].item() * 4 / 24, rel=1e-6)
