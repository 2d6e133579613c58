"""The recipes build from nothing, and a second make finds nothing to do."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _make(*args):
    bindir = Path(sys.executable).parent
    return subprocess.run(["make", "-C", str(ROOT / "recipes"), f"DAFLOW={bindir / 'daflow'}", f"PYTHON={sys.executable}", *args],
                          capture_output=True, text=True)


def test_help_lists_every_recipe():
    out = _make("help")
    assert out.returncode == 0
    assert "lorenz96-osse" in out.stdout


def test_lorenz96_osse_builds_once(tmp_path):
    built = _make("lorenz96-osse", f"WORK={tmp_path}")
    assert built.returncode == 0, built.stderr
    summary = (tmp_path / "lorenz96" / "summary.txt").read_text()
    rows = {line.split()[0]: line.split() for line in summary.splitlines()[2:]}
    assert float(rows["letkf"][2]) < 0.3 and float(rows["etkf"][2]) < 0.3 and float(rows["oi"][2]) < 1.2
    assert _make("-q", "lorenz96-osse", f"WORK={tmp_path}").returncode == 0  # up to date: nothing to do
