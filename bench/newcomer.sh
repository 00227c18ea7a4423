#!/usr/bin/env bash
# A newcomer's first minutes, timed: a fresh clone of REPO, a fresh virtual environment in it and
# HOME pointing at an empty folder (no pip cache, no compilation cache), then the README's
# Quick start install line and test line, word for word; with --demo also the main job, then
# the test line again (warm compilation cache). The README's Quick start figures come from it.
#
#   bash bench/newcomer.sh REPO OUT_DIR [--demo]        # e.g. bash bench/newcomer.sh . /tmp/n1
set -u
repo=$(cd "$1" && pwd); out=$2; demo=${3:-}
rm -rf "$out"; mkdir -p "$out/home"
git clone -q "$repo" "$out/repo"; cd "$out/repo" || exit 1
export HOME="$out/home"
unset RETINANET_JAX_NO_SKIPS RETINANET_JAX_CACHE RETINANET_JAX_TEST_CACHE XLA_FLAGS
python3 -m venv .venv
# shellcheck disable=SC1091
source .venv/bin/activate
timed() {  # timed NAME LOG COMMAND...: wall seconds, exit status and the log's last line
  local name=$1 log=$2; shift 2
  local start; start=$(date +%s.%N)
  "$@" > "$log" 2>&1
  local rc=$?
  echo "$name: rc=$rc $(echo "$(date +%s.%N) - $start" | bc) s; $(tail -1 "$log")" | tee -a "$out/summary"
}
echo "commit $(git rev-parse --short HEAD), $(date -u +%FT%TZ)" | tee "$out/summary"
timed install "$out/install.log" bash -c \
  'pip install -r requirements-dev.txt -e . && pip install --no-deps -r requirements-nodeps.txt'
timed tests "$out/tests.log" python -m pytest -q
if [ "$demo" = --demo ]; then
  timed demo "$out/demo.log" python train.py --config=configs/shapes.py --workdir="$out/shapes"
  grep -A1 -E '^ +AP +AP50' "$out/demo.log" | head -2 | tee -a "$out/summary"
  timed tests-warm "$out/tests-warm.log" python -m pytest -q
fi
