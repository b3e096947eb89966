#!/usr/bin/env bash
# Create .venv and install the project. Usage: scripts/setup.sh [planner|all]
#   planner: the light planner only (no torch)
#   all:     planner + testbed (torch CPU build 2.13.0, transformers) + test tools + measured kernel tables
# pip's output goes to .venv/setup.log; it is shown only if a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
py="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$py" -m venv .venv
log=.venv/setup.log
: > "$log"
pip_install() {
  if ! .venv/bin/python -m pip install --disable-pip-version-check "$@" >>"$log" 2>&1; then
    echo "setup failed: pip install $* (last lines of $log):" >&2
    tail -n 30 "$log" >&2
    exit 1
  fi
}
echo "setting up .venv ($what); pip log in $log" >&2
pip_install --upgrade pip
if [ "$what" = "all" ]; then
  # Pin torch first: an unpinned torch pulls the multi-gigabyte CUDA build.
  .venv/bin/python -c 'import torch' 2>/dev/null || pip_install "torch==2.13.0"
  pip_install -e '.[testbed,test,silicon,serve]'
else
  pip_install -e .
fi
.venv/bin/python -c 'import planner.cli' || { echo "setup failed: planner does not import" >&2; exit 1; }
