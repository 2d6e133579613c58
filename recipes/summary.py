"""Print a table of `daflow score --json` files: summary.py TITLE FILE.json..."""
import json
import sys
from pathlib import Path


def cell(figures: dict, key: str) -> str:
    return "-" if figures.get(key) is None else f"{figures[key]:.3f}"


title, files = sys.argv[1], sys.argv[2:]
print(title)
print(f"{'run':<14}{'members':>8}{'RMSE':>9}{'spread':>9}{'CRPS':>9}")
for name in files:
    s = json.loads(Path(name).read_text())
    print(f"{Path(name).stem:<14}{s['members']:>8}{cell(s, 'rmse'):>9}{cell(s, 'spread'):>9}{cell(s, 'crps'):>9}")
