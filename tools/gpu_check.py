"""Check a GPU machine in one command: every GPU path run once and compared with float32.

    python tools/gpu_check.py                      # Mixer-S/16 and B/16, every check
    python tools/gpu_check.py --quick              # Mixer-S/16 only
    python tools/gpu_check.py --models b16 --modes "O2 bf16" --steps 10 --json gpu_check.json
    python tools/gpu_check.py --device cpu --models tiny   # the same plan on a CPU (fp32 only)

Per model: a few Trainer steps in fp32, AMP O1/O2 with fp16 (loss scaler) and bf16, each from
the same initial weights and compared with fp32 (loss curve, final weights); the fp32 steps on
two GPUs (paddle.distributed.launch, NCCL) when two are visible; export + Predictor parity on
the GPU in fp32 and fp16, and through TensorRT when the build has it. Prints img/s, peak GPU
memory, the differences and PASS / FAIL / SKIP (with why) per check, and the tolerances.
Exit status 1 if a check failed; without a GPU it says so in one line and exits 0.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Paddle's C++ (glog) warnings are not for users of this tool; GLOG_minloglevel=0 shows them
os.environ.setdefault("GLOG_minloglevel", "2")

from passl_mixer.cli import run, tool_parser  # noqa: E402


def main(argv=None):
    from passl_mixer.benchmarks import gpu_check

    parser = tool_parser(__doc__)
    gpu_check.add_args(parser)
    args = parser.parse_args(argv)
    return gpu_check.main(args, echo=lambda line: print(line, flush=True))


if __name__ == "__main__":
    run(main)
