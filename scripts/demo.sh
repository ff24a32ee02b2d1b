#!/usr/bin/env bash
# Set up a fresh machine, then train, evaluate and save the embedded demo (a small Mixer on the
# shipped handwritten digits; about a minute on a 2-core CPU). Extra arguments go to train.py,
# e.g.  bash scripts/demo.sh -o train.epochs=5
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${PYTHON:-python}" tools/train.py -c configs/demo/mixer_digits.yaml "$@"
