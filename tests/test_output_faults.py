"""Output faults with real processes: file-size limit, read-only folder. No partial output is left."""
from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

DAFLOW = str(Path(sys.executable).with_name("daflow"))


def test_file_size_limit_exits_73_without_partial_output(sample_data, tmp_path):
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (400_000, 400_000))

    src = sample_data / "grib" / "era5-2mt-2019-03-uk.grib"
    done = subprocess.run([DAFLOW, "ingest", str(src), "-o", str(tmp_path / "t.nc")], preexec_fn=limit,
                          capture_output=True, text=True)
    assert done.returncode == 73, done.stderr
    assert "file-size limit" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_read_only_folder_exits_73(sample_data):
    with tempfile.TemporaryDirectory() as top:  # traversable by everyone, unlike pytest's tmp_path
        os.chmod(top, 0o755)
        folder = Path(top) / "ro"
        folder.mkdir(mode=0o555)
        folder.chmod(0o555)
        command = [DAFLOW, "ingest", str(sample_data / "enso" / "soi.long.csv"), "-o", str(folder / "x.nc")]
        if os.geteuid() == 0:  # root ignores permissions: run as nobody
            if shutil.which("setpriv") is None:
                pytest.skip("running as root without setpriv to drop privileges")
            command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
        done = subprocess.run(command, capture_output=True, text=True)
        assert done.returncode == 73, done.stderr
        assert f"{folder / 'x.nc'}: cannot create output: Permission denied" in done.stderr
        assert list(folder.iterdir()) == []
