#!/usr/bin/env bash
# cxr-bench entry point.
#   ./run_all.sh                      set up .venv, make the phantom data set, run the quick sweep, print the report path
#   ./run_all.sh test                 set up .venv and run the test suite
#   ./run_all.sh setup                set up .venv only (idempotent: seconds when nothing changed)
#   ./run_all.sh --config configs/X.yaml [--data-root DIR] [--out DIR] [--set key=value ...] [--launcher ray]
#   ./run_all.sh retrain --sweep DIR RUN [RUN ...] [--set key=value ...] [--discard]
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv
PY="$VENV/bin/python"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

setup() {
  local stamp="$VENV/.installed" want
  want=$(cat setup.cfg pyproject.toml | sha1sum | cut -d' ' -f1)
  if [ -x "$PY" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  echo "setting up $VENV (TensorFlow and friends; a few minutes the first time) ..."
  local free_mb
  free_mb=$(df -Pm . | awk 'NR==2 {print $4}')
  if [ -n "$free_mb" ] && [ "$free_mb" -lt 3500 ]; then
    echo "warning: only ${free_mb} MB free on the disk holding $PWD; installing TensorFlow needs about 3.5 GB (free some space if pip fails with 'No space left on device')" >&2
  fi
  if [ ! -x "$PY" ]; then
    local base="${PYTHON:-}"
    if [ -z "$base" ]; then
      for cand in python3.11 python3.12 python3.10 python3; do
        if command -v "$cand" >/dev/null 2>&1; then base=$cand; break; fi
      done
    fi
    [ -n "$base" ] || { echo "error: no python3 found; install Python 3.10-3.12" >&2; exit 2; }
    "$base" -m venv "$VENV"
  fi
  "$PY" -m pip install -q --disable-pip-version-check -e ".[test]"
  echo "$want" > "$stamp"
}

case "${1:-}" in
  setup)
    setup
    ;;
  test)
    shift
    setup
    exec "$PY" -m pytest "$@"
    ;;
  retrain)
    shift
    setup
    exec "$PY" -m benchmark retrain "$@"
    ;;
  -h|--help|help)
    sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'
    ;;
  *)
    setup
    config=configs/quick.yaml
    out=""
    data_root=""
    rest=()
    while [ $# -gt 0 ]; do
      case "$1" in
        --config) config="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --data-root) data_root="$2"; shift 2 ;;
        *) rest+=("$1"); shift ;;
      esac
    done
    name=$(basename "$config" .yaml)
    out="${out:-runs/$name}"
    args=(--config "$config" --out "$out")
    [ -z "$data_root" ] || args+=(--data-root "$data_root")
    status=0
    "$PY" -m benchmark sweep "${args[@]}" "${rest[@]+"${rest[@]}"}" || status=$?
    if [ -f "$out/report/index.html" ]; then
      echo
      echo "report: $(cd "$out/report" && pwd)/index.html"
    fi
    exit $status
    ;;
esac
