#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite. Fails if pytest collects no test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh all
set +e
.venv/bin/python -m pytest -q "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "FAILED: pytest collected no tests" >&2
fi
exit "$rc"
