"""Speed and memory benchmarks (a tool, not a test: figures depend on the machine).

    python tools/benchmark.py --mode train -c configs/demo/mixer_digits.yaml
    python tools/benchmark.py --mode data --num-images 512
    python tools/benchmark.py --mode infer -c configs/mlp_mixer/mixer_b16_224.yaml
    python tools/benchmark.py --mode convert
    python tools/benchmark.py --mode threads --rounds 6   # --threads N vs OMP_NUM_THREADS=N

Each mode prints its settings and figures, ending with one JSON line.
"""
import argparse
import importlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Paddle's C++ (glog) warnings, e.g. PIR's "... not support input out tensor for now!!!!!", are
# not for users of this tool; GLOG_minloglevel=0 shows them again
os.environ.setdefault("GLOG_minloglevel", "2")

from passl_mixer.cli import run, tool_parser  # noqa: E402


def main(argv=None):
    from passl_mixer.benchmarks import MODES

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--mode", choices=MODES, default="train")
    known, _ = pre.parse_known_args(argv)
    module = importlib.import_module(f"passl_mixer.benchmarks.{known.mode}")
    parser = tool_parser(__doc__, parents=[pre])
    module.add_args(parser)
    args = parser.parse_args(argv)
    result = module.run(args)
    print(json.dumps({"mode": args.mode, **result}))
    return 0


if __name__ == "__main__":
    run(main)
