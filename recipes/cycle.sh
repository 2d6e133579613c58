#!/usr/bin/env bash
# One data-assimilation cycle, for cron:  recipes/cycle.sh CYCLE_TIME   (e.g. 2026-01-01T06:00Z)
#
# Takes the previous cycle's analysis (or WORK/init.nc for the first cycle), forecasts to
# CYCLE_TIME, ingests the cycle's observations (quality control flags NaNs, duplicates and
# out-of-window times), assimilates, scores against TRUTH when given, archives everything under
# WORK/YYYYMMDDHH/ and points WORK/latest at it last.
#
# Safe under cron: one cycle at a time (flock; a second one exits 75), idempotent (a finished
# cycle is not redone), restartable (every product is written atomically and only missing ones are
# made again, so a run killed at any point is completed by the next with identical results).
# No observation file: the update is skipped and the background becomes the analysis.
#
# Settings (environment, or WORK/cycle.env sourced first):
#   WORK        work folder                                 [./work]
#   DAFLOW      the daflow command                          [daflow on PATH, else .venv/bin/daflow]
#   INTERVAL    time between cycles, for date -d           [6 hours]
#   STEPS       model steps per cycle                       [1]
#   OBS_DIR     incoming observations, OBS_DIR/YYYYMMDDHH.nc [WORK/incoming]
#   METHOD      assimilation method                         [letkf]
#   ASSIM_OPTS  options of the method                       [--inflation 1.04 --loc-radius 4]
#   SEED        seed of the random draws                    [1]
#   TRUTH       truth file to score against (optional)
# Exit codes: 0 done (or already done), 2 usage, 66 no previous analysis, 75 another cycle runs,
# any other daflow exit code when a step fails (see WORK/log/YYYYMMDDHH.log).
set -euo pipefail

usage() { echo "usage: $0 CYCLE_TIME (ISO-8601, e.g. 2026-01-01T06:00Z, or YYYYMMDDHH)" >&2; exit 2; }
[ $# -eq 1 ] || usage

WORK=${WORK:-work}
[ -f "$WORK/cycle.env" ] && . "$WORK/cycle.env"
here=$(cd "$(dirname "$0")/.." && pwd)
DAFLOW=${DAFLOW:-$(command -v daflow || echo "$here/.venv/bin/daflow")}
INTERVAL=${INTERVAL:-6 hours}
STEPS=${STEPS:-1}
OBS_DIR=${OBS_DIR:-$WORK/incoming}
METHOD=${METHOD:-letkf}
ASSIM_OPTS=${ASSIM_OPTS:---inflation 1.04 --loc-radius 4}
SEED=${SEED:-1}
TRUTH=${TRUTH:-}

when=$1
if [[ $when =~ ^([0-9]{4})([0-9]{2})([0-9]{2})([0-9]{2})$ ]]; then
  when="${BASH_REMATCH[1]}-${BASH_REMATCH[2]}-${BASH_REMATCH[3]}T${BASH_REMATCH[4]}:00Z"
fi
iso=$(date -u -d "$when" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null) || usage
cycle=$(date -u -d "$iso" +%Y%m%d%H)
previous=$(date -u -d "$iso - $INTERVAL" +%Y%m%d%H)
dir=$WORK/$cycle
mkdir -p "$WORK/log" "$dir"
log=$WORK/log/$cycle.log
say() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) [$cycle] $*" >> "$log"; }

exec 9> "$WORK/cycle.lock"
if ! flock -n 9; then
  echo "another cycle holds $WORK/cycle.lock; try again later" >&2
  say "not started: another cycle holds the lock"
  exit 75
fi

# step NAME OUTPUT COMMAND...: make OUTPUT unless it exists; log the command and its stderr.
step() {
  local name=$1 output=$2
  shift 2
  if [ -e "$output" ]; then
    say "$name: $output exists"
    return 0
  fi
  say "$name: $*"
  local rc=0
  "$@" 2>> "$log" || rc=$?
  if [ $rc -ne 0 ]; then
    say "$name failed (exit $rc)"
    echo "cycle $cycle: $name failed (exit $rc); see $log" >&2
    exit $rc
  fi
}

if [ -e "$dir/DONE" ]; then
  say "already complete"
  exit 0
fi
rm -f "$dir"/.*.tmp   # temporary files of a run that was killed

if [ -e "$WORK/$previous/analysis.nc" ]; then
  start=$WORK/$previous/analysis.nc
elif [ -e "$WORK/init.nc" ]; then
  start=$WORK/init.nc
  say "cold start from $start"
else
  echo "cycle $cycle: no analysis of $previous and no $WORK/init.nc to start from" >&2
  say "no previous analysis"
  exit 66
fi

step forecast "$dir/background.nc" "$DAFLOW" forecast --quiet --init "$start" --steps "$STEPS" -o "$dir/background.nc"
if [ -e "$OBS_DIR/$cycle.nc" ]; then
  step ingest "$dir/obs.nc" "$DAFLOW" ingest "$OBS_DIR/$cycle.nc" --time "$iso/$iso" -o "$dir/obs.nc"
  # shellcheck disable=SC2086  # ASSIM_OPTS is a list of options
  step assimilate "$dir/analysis.nc" "$DAFLOW" assimilate --quiet --method "$METHOD" --background "$dir/background.nc" \
    --obs "$dir/obs.nc" $ASSIM_OPTS --seed "$SEED" -o "$dir/analysis.nc"
else
  say "no observations ($OBS_DIR/$cycle.nc is absent): forecast only, the background is the analysis"
  step persist "$dir/analysis.nc" "$DAFLOW" forecast --quiet --init "$dir/background.nc" --steps 0 -o "$dir/analysis.nc"
fi
if [ -n "$TRUTH" ]; then
  step score "$dir/scores.nc" "$DAFLOW" score --quiet --truth "$TRUTH" --forecast "$dir/analysis.nc" -o "$dir/scores.nc"
fi

# The link first, the mark last: a run killed between them redoes only these two lines.
ln -sfn "$cycle" "$WORK/latest.tmp"
mv -T "$WORK/latest.tmp" "$WORK/latest"
touch "$dir/DONE"
say "complete"
