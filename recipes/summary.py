"""Print a table of `daflow score --json` files: summary.py TITLE FILE.json..."""
import json
import sys
from pathlib import Path

COLUMNS = {"RMSE": "rmse", "unobserved": "rmse_unobserved", "spread": "spread", "CRPS": "crps"}


def cell(figures: dict, key: str) -> str:
    return "-" if figures.get(key) is None else f"{figures[key]:.3f}"


title, files = sys.argv[1], sys.argv[2:]
scores = {Path(name).stem: json.loads(Path(name).read_text()) for name in files}
shown = {head: key for head, key in COLUMNS.items() if any(s.get(key) is not None for s in scores.values())}
print(title)
print(f"{'run':<16}{'members':>8}" + "".join(f"{head:>11}" for head in shown))
for run, s in scores.items():
    print(f"{run:<16}{s['members']:>8}" + "".join(f"{cell(s, key):>11}" for key in shown.values()))
