#!/usr/bin/env bash
# Everything CI runs, in order, with the time each stage took. Called by `make test` (and so by .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export PYTHONHASHSEED=0 MPLBACKEND=Agg
declare -a names=() times=()
stage() {  # stage NAME COMMAND...: run a stage and remember how long it took
  local name=$1; shift
  echo "=== $name ==="
  local start=$SECONDS
  "$@"
  names+=("$name"); times+=($((SECONDS - start)))
}

stage "browser install" bash scripts/ensure-chromium.sh
stage "book check" $PY -m perturb check
stage "unit and book tests" $PY -m pytest tests -n 2 -q --ignore=tests/browser
stage "chapters (nbval)" $PY -m pytest --nbval-lax -n 2 --dist loadscope -q \
  --nbval-sanitize-with tests/nbval_sanitize.cfg book
stage "site build" .venv/bin/jupyter-book build . -W -n --keep-going --quiet
stage "browser" $PY -m pytest tests/browser -q

echo "=== time per stage ==="
for i in "${!names[@]}"; do printf '%-36s %5d s\n' "${names[$i]}" "${times[$i]}"; done
