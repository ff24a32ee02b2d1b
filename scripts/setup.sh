#!/usr/bin/env bash
# Set up a fresh machine: Paddle (CPU build unless a Paddle build is already installed, or
# PADDLE_REQUIREMENTS=requirements/gpu.txt asks for the GPU one) and this package, editable.
# Usage: bash scripts/setup.sh [test]      ("test" also installs the test requirements)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
if [ -n "${PADDLE_REQUIREMENTS:-}" ]; then
  "$PY" -m pip install -q -r "$PADDLE_REQUIREMENTS"
elif "$PY" -c "import paddle" >/dev/null 2>&1; then
  echo "setup: keeping the installed Paddle $("$PY" -c 'import paddle; print(paddle.__version__)' 2>/dev/null | tail -n1)"
else
  echo "setup: installing Paddle (CPU build) from requirements/cpu.txt"
  "$PY" -m pip install -q -r requirements/cpu.txt
fi
"$PY" -m pip install -q -e .
if [ "${1:-}" = "test" ]; then
  "$PY" -m pip install -q -r requirements/test.txt
fi
