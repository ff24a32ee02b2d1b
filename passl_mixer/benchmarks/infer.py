"""Inference speed: dygraph vs the exported predictor (fp32, bf16) vs the machine's peak.

    python tools/benchmark.py --mode infer -c configs/mlp_mixer/mixer_b16_224.yaml --batch-size 32

One run measures, each in its own process (a process that has run a oneDNN predictor keeps
running dygraph ~1.8x slower, so measurements must not share one):
  * the model in dygraph (``model(x)`` under no_grad), as a user runs it, and again with the
    freed-memory setting the Predictor applies (``keep_freed_memory``), which speeds dygraph
    up too,
  * the model exported and run by :class:`passl_mixer.inference.Predictor` in fp32 and bf16,
  * the fp32 and bf16 matrix-multiply peaks of the same engine: a one-layer 4096x4096 linear
    program on a [4096, 4096] input, run by the same oneDNN predictor settings (memory kept
    too). (Dygraph's ``paddle.matmul`` uses a much slower kernel on CPU and is no measure of
    the peak.)
Achieved GFLOP/s count 2 FLOPs per multiply-accumulate of the backbone (``backbone.macs()``)
and the head; the share of peak compares fp32 with the fp32 peak and bf16 with the bf16 peak.
Each process sets up and warms up its measurement; then ``--iters`` rounds time one run of each
in turn, and each keeps its best time: on a shared machine, load from other work falls on all
measurements alike and the best time is the least disturbed one.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict

import numpy as np

PEAK_SIZE = 4096
PAUSE = 0.5  # seconds between timed runs
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def add_args(parser) -> None:
    parser.add_argument("-c", "--config", required=True, help="model config (YAML)")
    parser.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default: the cores available)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first")
    parser.add_argument("--iters", type=int, default=5,
                        help="timed rounds (each measurement keeps its best)")
    parser.add_argument("--skip-dygraph", action="store_true",
                        help="leave out the (slow) dygraph measurement")


# -- the measurements, each in its own child process ------------------------------------------
def _setup_dygraph(job: Dict[str, Any]):
    import paddle

    from ..config import load_config
    from ..export import build_model_with_weights, input_shape
    from ..inference import keep_freed_memory

    if job.get("keep_memory"):
        keep_freed_memory()
    cfg = _random_weights_config(load_config(job["config"], job["overrides"]))
    model = build_model_with_weights(cfg)
    x = paddle.randn([job["batch_size"], *input_shape(model)])

    def once():
        with paddle.no_grad():
            model(x).numpy()
    return once, "fp32"


def _setup_predictor(job: Dict[str, Any]):
    from ..inference import Predictor

    predictor = Predictor(job["model_dir"], precision=job["precision"], threads=job["threads"],
                          batch_size=job["batch_size"], keep_memory=True, quiet=True)
    x = np.random.default_rng(0).standard_normal([job["batch_size"], *predictor.input_shape],
                                                 dtype=np.float32)
    return (lambda: predictor.run(x)), predictor.precision


def _setup_peak(job: Dict[str, Any]):
    import paddle.inference as paddle_infer

    from ..export import program_file
    from ..inference import keep_freed_memory, paddle_config

    keep_freed_memory()  # as the Predictor does
    d = job["model_dir"]
    config, precision = paddle_config(os.path.join(d, program_file(d, "linear")),
                                      os.path.join(d, "linear.pdiparams"),
                                      precision=job["precision"], threads=job["threads"])
    predictor = paddle_infer.create_predictor(config)
    x = np.random.default_rng(0).standard_normal([PEAK_SIZE, PEAK_SIZE], dtype=np.float32)
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape(list(x.shape))
    handle.copy_from_cpu(x)
    return predictor.run, precision


SETUPS = {"dygraph": _setup_dygraph, "predictor": _setup_predictor, "peak": _setup_peak}


def _child_main(job: Dict[str, Any]) -> None:
    """Set up one measurement, warm it up, then time one run per line read from stdin."""
    # Replies go to a private copy of stdout; fd 1 itself goes to stderr, so the debug lines
    # Paddle's C++ code prints there cannot mix into the replies.
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    once, precision = SETUPS[job["kind"]](job)
    for _ in range(job["warmup"]):
        once()
    replies.write(json.dumps({"precision": precision}) + "\n")
    for _ in sys.stdin:
        start = time.perf_counter()
        once()
        replies.write(f"{time.perf_counter() - start}\n")


class _Child:
    """A measurement running in its own Python process, timed one run at a time."""

    def __init__(self, job: Dict[str, Any], threads: int, log_dir: str):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads),
                   PYTHONPATH=os.pathsep.join([_ROOT, os.environ.get("PYTHONPATH", "")]))
        self.kind = job["kind"]
        self.log = tempfile.TemporaryFile(mode="w+", dir=log_dir)  # stderr, read on failure
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "passl_mixer.benchmarks.infer", json.dumps(job)], env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.precision = json.loads(self._reply())["precision"]

    def _reply(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            self.log.seek(0)
            raise RuntimeError(f"benchmark child '{self.kind}' failed:\n{self.log.read()[-3000:]}")
        return line

    def time_once(self) -> float:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        return float(self._reply())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()
        self.log.close()


def _random_weights_config(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """The config without weights to load: speed does not depend on the weights' values."""
    cfg.pop("weights", None)
    cfg["model"].pop("pretrained", None)
    return cfg


# -- the parent ---------------------------------------------------------------------------------
def _export_peak_program(directory: str) -> None:
    import paddle

    layer = paddle.nn.Linear(PEAK_SIZE, PEAK_SIZE, bias_attr=False)
    paddle.jit.save(layer, os.path.join(directory, "linear"),
                    input_spec=[paddle.static.InputSpec([None, PEAK_SIZE], "float32", "x")])


def run(args) -> Dict[str, Any]:
    import paddle

    from ..cli import config_name
    from ..config import load_config
    from ..export import export_model
    from ..inference import available_cores, cpu_has_bf16
    from ..models.info import classifier_macs
    from ..registry import build_model

    threads = args.threads or available_cores()
    cfg = _random_weights_config(load_config(args.config, args.override))
    with paddle.LazyGuard():  # only the sizes are needed here
        model = build_model(cfg["model"])
    gflop_per_image = 2 * classifier_macs(model) / 1e9
    bs = args.batch_size
    common = dict(batch_size=bs, threads=threads, warmup=args.warmup)

    with tempfile.TemporaryDirectory(prefix="passl_infer_bench_") as tmp:
        model_dir = os.path.join(tmp, "model")
        export_model(cfg, model_dir, model_name=config_name(args.config))
        _export_peak_program(tmp)
        jobs = {}
        if not args.skip_dygraph:
            jobs["dygraph fp32"] = dict(kind="dygraph", config=args.config,
                                        overrides=args.override)
            # the predictor's freed-memory setting helps dygraph too: measured, for fairness
            jobs["dygraph fp32, memory kept"] = dict(jobs["dygraph fp32"], keep_memory=True)
        for precision in ("fp32", "bf16"):
            jobs[f"predictor {precision}"] = dict(kind="predictor", model_dir=model_dir,
                                                  precision=precision)
            jobs[f"peak {precision}"] = dict(kind="peak", model_dir=tmp, precision=precision)
        children = {}
        try:
            for name, job in jobs.items():  # set up one at a time: setups do not overlap
                print(f"  setting up {name}", flush=True)
                children[name] = _Child({**common, **job}, threads, tmp)
            best = {name: float("inf") for name in children}
            # Rounds visit every measurement in turn, so background load on a shared machine
            # hits all of them alike; each keeps its best time.
            for r in range(args.iters):
                for name, child in children.items():
                    time.sleep(PAUSE)  # let the previous child's OpenMP threads go idle
                    best[name] = min(best[name], child.time_once())
                print(f"  round {r + 1}/{args.iters}: " + ", ".join(
                    f"{name} {best[name] * 1e3:.0f} ms" for name in children), flush=True)
        finally:
            for child in children.values():
                child.close()

    rows = {}
    for name, seconds in best.items():
        images = None if name.startswith("peak") else bs
        flop = gflop_per_image * bs if images else 2 * PEAK_SIZE ** 3 / 1e9
        rows[name] = {"precision": children[name].precision, "seconds": seconds,
                      "gflops": flop / seconds, "img_per_s": images / seconds if images else None}
    for name, row in rows.items():
        if not name.startswith("peak"):
            row["share_of_peak"] = row["gflops"] / rows[f"peak {row['precision']}"]["gflops"]
    ratios = {}
    for key, dygraph in (("fp32_vs_dygraph", "dygraph fp32"),
                         ("fp32_vs_dygraph_memory_kept", "dygraph fp32, memory kept")):
        if dygraph in rows:
            ratios[key] = rows["predictor fp32"]["img_per_s"] / rows[dygraph]["img_per_s"]
    if rows["predictor bf16"]["precision"] == "bf16":
        ratios["bf16_vs_fp32"] = rows["predictor bf16"]["img_per_s"] / \
            rows["predictor fp32"]["img_per_s"]
    info = {"config": config_name(args.config), "batch_size": bs, "threads": threads,
            "gflop_per_image": gflop_per_image, "cpu": _cpu_name(),
            "cpu_has_bf16": cpu_has_bf16(), "paddle": paddle.__version__}
    _print_table(info, rows, ratios)
    return {**info, "results": rows, "ratios": ratios}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", "r", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _print_table(info, rows, ratios) -> None:
    print(f"\n{info['config']}: batch {info['batch_size']}, {info['threads']} threads, "
          f"{info['gflop_per_image']:.3g} GFLOP/image, {info['cpu']} "
          f"(bf16 instructions: {'yes' if info['cpu_has_bf16'] else 'no'}), "
          f"Paddle {info['paddle']}")
    widths = (34, 8, 9, 8, 9)
    cells = ("engine", "img/s", "ms/batch", "GFLOP/s", "% of peak")
    print("| " + " | ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}"
                            for i, (c, w) in enumerate(zip(cells, widths))) + " |")
    print("|" + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":"
                         for i, w in enumerate(widths)) + "|")
    for name, row in rows.items():
        label = f"{name} ({PEAK_SIZE}x{PEAK_SIZE} linear)" if name.startswith("peak") else name
        if row["precision"] not in name:
            label += f" (ran {row['precision']})"
        per_image = row["img_per_s"] is not None
        cells = (label, f"{row['img_per_s']:.2f}" if per_image else "-",
                 f"{row['seconds'] * 1e3:.0f}" if per_image else "-", f"{row['gflops']:.0f}",
                 f"{100 * row['share_of_peak']:.0f}%" if "share_of_peak" in row else "-")
        print("| " + " | ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}"
                                for i, (c, w) in enumerate(zip(cells, widths))) + " |")
    for key, value in ratios.items():
        print(f"{key.replace('_vs_', ' vs ').replace('_', ' ')}: {value:.2f}x")


if __name__ == "__main__":
    _child_main(json.loads(sys.argv[1]))
