"""Math threads without OMP_NUM_THREADS: a matmul timed in child processes started with
``OMP_NUM_THREADS=N`` (which makes Paddle's import print its multi-line warning) and, alternately,
without it but with ``passl_mixer.cli.set_threads(N)`` (what the tools do), and with neither
(Paddle's default: one thread).

    python tools/benchmark.py --mode threads --rounds 6
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, time
how, n, size, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
import paddle
from passl_mixer.cli import set_threads
if how == "set_threads":
    set_threads(n)
x, y = paddle.randn([size, size]), paddle.randn([size, size])
for _ in range(3):
    (x @ y).numpy()
best, wall, cpu = float("inf"), 0.0, 0.0
for _ in range(5):
    t, c = time.perf_counter(), time.process_time()
    for _ in range(reps):
        z = x @ y
    z.numpy()
    wall += time.perf_counter() - t
    cpu += time.process_time() - c
    best = min(best, (time.perf_counter() - t) / reps)
print(json.dumps({"ms": best * 1000, "cpu_per_wall": cpu / wall}))
"""
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def add_args(parser):
    parser.add_argument("--threads", type=int, default=2, help="N")
    parser.add_argument("--size", type=int, default=1024, help="matmul size (size x size)")
    parser.add_argument("--reps", type=int, default=10, help="matmuls per timing")
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds")


def _child(how: str, args) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    if how == "OMP_NUM_THREADS":
        env["OMP_NUM_THREADS"] = str(args.threads)
    proc = subprocess.run([sys.executable, "-c", CHILD, how, str(args.threads), str(args.size),
                           str(args.reps)], env=env, capture_output=True, text=True, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["warned"] = "PLEASE USE OMP_NUM_THREADS" in proc.stderr
    return result


def run(args) -> dict:
    hows = ("OMP_NUM_THREADS", "set_threads", "default")
    times = {h: [] for h in hows}
    busy = {h: [] for h in hows}  # CPU seconds per wall second: the threads really working
    warned = {h: False for h in hows}
    for r in range(args.rounds):
        for how in (hows if r % 2 == 0 else hows[::-1]):  # alternate the order
            res = _child(how, args)
            times[how].append(res["ms"])
            busy[how].append(res["cpu_per_wall"])
            warned[how] |= res["warned"]
        print(f"round {r + 1}: " + ", ".join(f"{h} {times[h][-1]:.1f} ms "
                                            f"(cpu/wall {busy[h][-1]:.2f})" for h in hows),
              flush=True)
    ratios = [s / e for s, e in zip(times["set_threads"], times["OMP_NUM_THREADS"])]
    med = {h: statistics.median(v) for h, v in times.items()}
    print(f"{args.size}x{args.size} matmul, {args.threads} threads, median of {args.rounds}: "
          + ", ".join(f"{h} {med[h]:.1f} ms" for h in hows)
          + "; set_threads / OMP_NUM_THREADS per round: "
          + ", ".join(f"{x:.2f}" for x in ratios))
    return {"threads": args.threads, "size": args.size, "median_ms": {h: round(v, 2)
            for h, v in med.items()}, "ratio_set_threads_to_env": [round(x, 3) for x in ratios],
            "median_ratio": round(statistics.median(ratios), 3),
            "median_cpu_per_wall": {h: round(statistics.median(v), 2) for h, v in busy.items()},
            "import_warning": warned}
