#!/usr/bin/env bash
# Create .venv and install the project. Usage: scripts/setup.sh [planner|all]
#   planner: the light planner only (no torch)
#   all:     planner + testbed (torch CPU build 2.13.0, transformers) + test tools
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
py="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$py" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
if [ "$what" = "all" ]; then
  # Pin torch first: an unpinned torch pulls the multi-gigabyte CUDA build.
  .venv/bin/python -c 'import torch' 2>/dev/null || \
    .venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0" 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[testbed,test]' 2>&1 | grep -v '^WARNING: Location' || true
else
  .venv/bin/python -m pip install -q --disable-pip-version-check -e . 2>&1 | grep -v '^WARNING: Location' || true
fi
.venv/bin/python -c 'import planner' || { echo "setup failed: planner does not import" >&2; exit 1; }
