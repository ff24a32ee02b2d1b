#!/usr/bin/env bash
# Install everything the tests need, then run the whole test suite. CI calls this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
# the import layers first (contracts in .importlinter; README.md, "Layout")
lint-imports
exec "${PYTHON:-python}" -m pytest -q "$@" tests
