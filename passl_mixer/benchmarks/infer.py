"""Inference speed: every engine available on this machine vs the matrix-multiply peak of its
precision, measured in the same interleaved rounds.

    python tools/benchmark.py --mode infer -c configs/mlp_mixer/mixer_s16_224.yaml --batch-size 32

Engines (:data:`ENGINES`; each says whether it can run here and why not):
  * Paddle Inference (oneDNN) fp32 and bf16, with the settings :class:`passl_mixer.inference.
    Predictor` uses (``paddle_config`` and the kept freed memory); Paddle has no INT8 for
    these models (the table says why);
  * ONNX Runtime (CPU) fp32 and OpenVINO (CPU) fp32, bf16 and int8 (NNCF-calibrated as
    ``tools/quantize.py`` does, here on the benchmark's batch) on the ONNX export, when the
    packages are installed (all optional);
  * dygraph (``model(x)`` under no_grad), as a user runs it.
Every engine runs in its own process (a process that has run a oneDNN predictor keeps running
dygraph ~1.8x slower, so measurements must not share one).

The peak of a precision is the fastest plain matrix multiply measured in the same rounds: a
program of :data:`PEAK_DEPTH` Linears alternating K -> N and N -> K, bias-free and with a bias
(engines run the two with different GEMM kernels), for the model's two heaviest Linear shapes
([B*S, K] x [K, N], found by running the model once on one image; a channel MLP's fc1 and fc2
make one such chain) and for a 2048x2048 square, run by Paddle Inference in that precision,
plus the heaviest chain run by every other engine of that precision. A model's matmuls are the
same shapes, and the rest of its work (norms, adds, activations, layout reorders) only adds
time, so a model can at most reach the peak: a share above 100% by more than noise
(:data:`SOUND_MARGIN`) means the peak was measured badly, and the table says so.

Achieved GFLOP/s count 2 FLOPs per multiply-accumulate of the backbone (``backbone.macs()``) and
the head. Each process sets up and warms up its measurement; then ``--iters`` rounds visit
each in turn, time :data:`RUNS_PER_VISIT` runs back to back, and each keeps its best time: on
a shared machine, load from other work falls on all measurements alike and the best time is
the least disturbed one. Each engine's
outputs on one fixed batch are compared with Paddle fp32's (``max |diff|``, relative to the
largest output magnitude), so "fp32-exact" is measured, not assumed.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .child import TimedChild, reply_channel, serve

SQUARE = 2048           # the square matmul every peak includes
FP32_EXACT = 1e-5       # max |diff| vs Paddle fp32, relative to the largest output: 'fp32-exact'
HEAVIEST_SHAPES = 2     # the model's heaviest Linear shapes measured as peak programs
PEAK_DEPTH = 8          # Linears per peak program (see _export_peak_program)
SOUND_MARGIN = 0.05     # a share of peak above 1 + this is not noise: the peak is unsound
PAUSE = 0.5             # seconds between timed runs: the previous child's threads go idle
RUNS_PER_VISIT = 2      # back-to-back runs per visit, the best kept: the first after the pause
                        # is slower (Sapphire Rapids, S/16 batch 32, after 0.5 s idle: OpenVINO
                        # INT8 163 vs 145 ms, Paddle bf16 248 vs 230 ms)


def add_args(parser) -> None:
    parser.add_argument("-c", "--config", required=True, help="model config (YAML)")
    parser.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default: the cores available)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first")
    parser.add_argument("--iters", type=int, default=5,
                        help="timed rounds (each measurement keeps its best)")
    parser.add_argument("--engines", default=None,
                        help="comma-separated engine names to measure (default: every one "
                             f"available; known: {', '.join(e.name for e in ENGINES)})")
    parser.add_argument("--skip-dygraph", action="store_true",
                        help="leave out the (slow) dygraph measurement")


# -- engines: where each runs, and how it runs a program in a child process -------------------
class Engine:
    """One way to run an exported program. ``unavailable()`` is None where the engine can run
    here, else why not; ``setup(files, x, threads)`` (in the child) returns a function that
    runs the program once on ``x`` (the timed part), one that returns the last run's output
    (copying a large output is not the engine's work: a peak program's is 50 MB), and the
    precision really running."""
    name = ""
    precision = "fp32"
    note = ""           # what setup chose, printed under the table
    program = "paddle"  # which file it runs: 'paddle' (json/pdiparams), 'onnx', 'dygraph'

    def unavailable(self) -> Optional[str]:
        return None

    def setup(self, files: Dict[str, Any], x: np.ndarray, threads: int
              ) -> Tuple[Callable[[], Any], Callable[[], np.ndarray], str]:
        raise NotImplementedError


class PaddleEngine(Engine):
    """Paddle Inference on oneDNN, configured as the Predictor configures it."""

    def __init__(self, precision: str):
        self.precision = precision
        self.name = f"paddle {precision}"

    def unavailable(self):
        from ..inference import PRECISIONS, cpu_has_bf16
        if self.precision not in PRECISIONS:
            return f"this Predictor has no '{self.precision}' precision"
        if self.precision == "int8":
            return ("Paddle Inference 3.3.1 runs these models in no INT8 kernels (README, INT8); "
                    "INT8 is 'openvino int8'")
        if self.precision == "bf16" and not cpu_has_bf16():
            return "the CPU has no bf16 instructions (avx512_bf16 / amx_bf16)"
        return None

    def setup(self, files, x, threads):
        import paddle.inference as paddle_infer

        from ..inference import keep_freed_memory, paddle_config, stdout_discarded

        keep_freed_memory()  # as the Predictor does with keep_memory=True
        config, precision = paddle_config(files["model_file"], files["params_file"],
                                          precision=self.precision, threads=threads)
        predictor = paddle_infer.create_predictor(config)
        handle = predictor.get_input_handle(predictor.get_input_names()[0])
        output = predictor.get_output_handle(predictor.get_output_names()[0])
        handle.reshape(list(x.shape))
        handle.copy_from_cpu(x)

        with stdout_discarded():  # the oneDNN passes' debug line on the first run
            predictor.run()
        return predictor.run, output.copy_to_cpu, precision


class OnnxRuntimeEngine(Engine):
    name, precision, program = "onnxruntime fp32", "fp32", "onnx"

    def unavailable(self):
        return _missing_module("onnxruntime")

    def setup(self, files, x, threads):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        session = onnxruntime.InferenceSession(files["onnx"], sess_options=options,
                                               providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x}
        last = [None]

        def once():
            last[0] = session.run(None, feed)[0]
        return once, (lambda: last[0]), "fp32"


class OpenVinoEngine(Engine):
    program = "onnx"

    def __init__(self, precision: str):
        self.precision = precision
        self.name = f"openvino {precision}"

    def unavailable(self):
        missing = _missing_module("openvino")
        if missing or self.precision == "fp32":
            return missing
        if self.precision == "int8":
            return _missing_module("nncf")
        import openvino
        if "BF16" not in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            return "OpenVINO's CPU plugin has no BF16 capability on this CPU"
        return None

    def setup(self, files, x, threads):
        import openvino

        core = openvino.Core()
        if self.precision == "int8":
            from ..quantize import quantize_onnx

            # calibrated on the benchmark's own batch: the kernels, not the ranges, set the speed
            model, chosen = quantize_onnx(files["onnx"], x, threads=threads)
            self.note = f"token-mixing MLPs {chosen['token_mixing']}"
            if "ms_per_batch" in chosen:
                self.note += " (timed: " + ", ".join(
                    f"{k} {v:.0f} ms" for k, v in chosen["ms_per_batch"].items()) + ")"
        else:
            model = core.read_model(files["onnx"])
        model.reshape({model.inputs[0].any_name: list(x.shape)})  # static shape: fastest
        settings = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        if self.precision != "int8":  # int8: OpenVINO's default for the ops left in float
            settings["INFERENCE_PRECISION_HINT"] = {"fp32": "f32", "bf16": "bf16"}[self.precision]
        compiled = core.compile_model(model, "CPU", settings)
        request = compiled.create_infer_request()
        request.set_input_tensor(openvino.Tensor(x))
        ran = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # 'f32'/'bf16'
        return (request.infer, lambda: np.array(request.get_output_tensor(0).data),
                "int8" if self.precision == "int8" else "bf16" if ran == "bf16" else "fp32")


class DygraphEngine(Engine):
    name, precision, program = "dygraph fp32", "fp32", "dygraph"

    def setup(self, files, x, threads):
        import paddle

        from ..config import load_config
        from ..export import build_model_with_weights

        model = build_model_with_weights(_random_weights_config(
            load_config(files["config"], files["overrides"])), files["weights"])
        xt = paddle.to_tensor(x)
        last = [None]

        def once():
            with paddle.no_grad():
                last[0] = model(xt).numpy()  # .numpy() waits for the result
        return once, (lambda: last[0]), "fp32"


def _missing_module(module: str) -> Optional[str]:
    import importlib.util
    if importlib.util.find_spec(module) is None:
        return f"{module} is not installed (optional: pip install {module})"
    return None


# The engines, in table order; another engine is one class more. Paddle int8 is listed to say
# why it is not measured; INT8 runs on OpenVINO (passl_mixer.quantize).
ENGINES: List[Engine] = [PaddleEngine("fp32"), PaddleEngine("bf16"), PaddleEngine("int8"),
                         OnnxRuntimeEngine(), OpenVinoEngine("fp32"), OpenVinoEngine("bf16"),
                         OpenVinoEngine("int8"), DygraphEngine()]


def engine_by_name(name: str) -> Engine:
    for engine in ENGINES:
        if engine.name == name:
            return engine
    raise KeyError(name)


# -- the measurements, each in its own child process ------------------------------------------
def _child_main(job: Dict[str, Any]) -> None:
    """Set up one measurement, warm it up, save its output on the fixed input, then time one
    run per line read from stdin (:func:`child.serve`)."""
    replies = reply_channel()
    x = np.random.default_rng(0).standard_normal(job["input_shape"], dtype=np.float32)
    engine = engine_by_name(job["engine"])
    once, output, precision = engine.setup(job["files"], x, job["threads"])
    for _ in range(job["warmup"]):
        once()
    if job.get("output"):
        np.save(job["output"], np.asarray(output(), dtype=np.float32))
    serve(replies, json.dumps({"precision": precision, "note": engine.note}), once)


def _random_weights_config(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """The config without weights to load: speed does not depend on the weights' values."""
    cfg.pop("weights", None)
    cfg["model"].pop("pretrained", None)
    return cfg


# -- the peak programs --------------------------------------------------------------------------
def heaviest_linear_shapes(model, batch_size: int, count: int = HEAVIEST_SHAPES
                           ) -> List[Tuple[int, int, int]]:
    """The ``count`` (M, K, N) shapes of the model's ``nn.Linear`` matmuls with the most FLOPs
    in a batch of ``batch_size`` (M = rows of the flattened input), found by running the model
    once on one image with forward hooks."""
    import paddle

    flops: Dict[Tuple[int, int, int], int] = {}

    def record(layer, inputs, output):
        k, n = layer.weight.shape
        m = int(np.prod(inputs[0].shape[:-1])) * batch_size
        flops[(m, k, n)] = flops.get((m, k, n), 0) + m * k * n

    hooks = [layer.register_forward_post_hook(record) for layer in model.sublayers()
             if isinstance(layer, paddle.nn.Linear)]
    try:
        with paddle.no_grad():
            model(paddle.zeros([1, *_input_shape(model)]))
    finally:
        for hook in hooks:
            hook.remove()
    return sorted(flops, key=lambda s: -flops[s])[:count]


def _no_zero_parameters(model) -> None:
    """Give every all-zero parameter (a zero-initialised head, biases) small random values, so
    the engines' outputs differ from zero and comparing them means something."""
    import paddle

    rng = np.random.default_rng(0)
    for param in model.parameters():
        if not np.any(param.numpy()):
            param.set_value(paddle.to_tensor(
                0.02 * rng.standard_normal(param.shape).astype(np.float32)))


def _input_shape(model) -> List[int]:
    from ..export import input_shape
    return input_shape(model)


def peak_chains(shapes: Sequence[Tuple[int, int, int]]) -> List[Tuple[int, int, int]]:
    """``shapes`` without those a chain of another already covers: the chain of (M, K, N)
    alternates K -> N and N -> K, so it holds (M, N, K) too (a channel MLP's fc1 and fc2)."""
    chains: List[Tuple[int, int, int]] = []
    for m, k, n in shapes:
        if (m, k, n) not in chains and (m, n, k) not in chains:
            chains.append((m, k, n))
    return chains


def _export_peak_program(directory: str, k: int, n: int, onnx: bool, bias: bool = False
                         ) -> Dict[str, str]:
    """:data:`PEAK_DEPTH` Linears alternating K -> N and N -> K (a channel MLP without its
    activation, several times over), bias-free or (``bias``) with a bias as the model's Linears
    have, as a Paddle program (and ONNX, for the ONNX engines). Several, not one: a program
    converts its float input and output once (to bf16 and back, or between layouts), which a
    model does once for its whole depth; a lone matmul pays it for one product, and on a
    machine with little memory bandwidth that made the "peak" slower than the model's own
    products (Sapphire Rapids, Mixer-B/16 batch 32: a one-Linear bf16 peak of 781 GFLOP/s
    under a model at 1,099)."""
    import paddle

    from ..export_layout import program_file
    from ..inference import stdout_discarded

    prefix = os.path.join(directory, "linear")
    sizes = [k, n] * (PEAK_DEPTH // 2 + 1)
    layer = paddle.nn.Sequential(*[paddle.nn.Linear(sizes[i], sizes[i + 1],
                                                    bias_attr=None if bias else False)
                                   for i in range(PEAK_DEPTH)])
    paddle.jit.save(layer, prefix, input_spec=[paddle.static.InputSpec([None, k], "float32",
                                                                        "x")])
    files = {"model_file": os.path.join(directory, program_file(directory, "linear")),
             "params_file": prefix + ".pdiparams"}
    if onnx:
        import paddle2onnx
        files["onnx"] = prefix + ".onnx"
        with stdout_discarded():
            paddle2onnx.export(files["model_file"], files["params_file"], save_file=files["onnx"],
                               opset_version=13)
    return files


def peak_label(shape: Sequence[int], bias: bool = False) -> str:
    m, k, n = shape
    return f"{PEAK_DEPTH} linears {k}<->{n} on {m} rows" + (" + bias" if bias else "")


# -- soundness ----------------------------------------------------------------------------------
def shares_of_peak(rows: Dict[str, Dict[str, Any]], margin: float = SOUND_MARGIN
                   ) -> Tuple[Dict[str, float], List[str]]:
    """Per precision the peak GFLOP/s (the best of its peak rows), each model row's share of
    the peak of the precision it ran (stored in the row as ``share_of_peak``), and warnings for
    shares above ``1 + margin``: a model cannot run faster than its own matmuls, so such a share
    says the peak was measured badly (too few rounds, or load that hit only the peak runs)."""
    peaks: Dict[str, float] = {}
    for row in rows.values():
        if row["peak"]:
            peaks[row["precision"]] = max(peaks.get(row["precision"], 0.0), row["gflops"])
    warnings = []
    for name, row in rows.items():
        if row["peak"] or row["precision"] not in peaks:
            continue
        row["share_of_peak"] = row["gflops"] / peaks[row["precision"]]
        if row["share_of_peak"] > 1 + margin:
            warnings.append(f"{name} ran at {100 * row['share_of_peak']:.0f}% of the "
                            f"{row['precision']} peak: above 100% by more than noise "
                            f"({100 * margin:.0f}%), so the peak was measured badly; measure "
                            f"again with more --iters on a quieter machine.")
    return peaks, warnings


# -- the parent ---------------------------------------------------------------------------------
def _chosen_engines(args) -> Tuple[List[Engine], Dict[str, str]]:
    from ..errors import ConfigError

    wanted = None
    if args.engines:
        wanted = [w.strip() for w in args.engines.split(",") if w.strip()]
        unknown = [w for w in wanted if w not in {e.name for e in ENGINES}]
        if unknown:
            raise ConfigError(f"--engines: unknown engine(s) {', '.join(unknown)}; known: "
                              f"{', '.join(e.name for e in ENGINES)}.")
    chosen, skipped = [], {}
    for engine in ENGINES:
        if wanted is not None and engine.name not in wanted:
            continue
        why = engine.unavailable()
        if why is None and args.skip_dygraph and engine.program == "dygraph":
            why = "--skip-dygraph"
        if why is None and engine.program == "onnx" and _missing_module("paddle2onnx"):
            why = _missing_module("paddle2onnx")
        if why:
            skipped[engine.name] = why
        else:
            chosen.append(engine)
    if "paddle fp32" not in {e.name for e in chosen}:
        raise ConfigError("--engines must include 'paddle fp32': the other engines' outputs "
                          "are compared with it.")
    return chosen, skipped


def run(args) -> Dict[str, Any]:
    import paddle

    from ..cli import config_name
    from ..config import load_config
    from ..export import export_model
    from ..inference import available_cores, cpu_has_bf16
    from ..models.info import classifier_macs
    from ..registry import build_model

    threads = args.threads or available_cores()
    engines, skipped = _chosen_engines(args)
    bs = args.batch_size
    cfg = _random_weights_config(load_config(args.config, args.override))
    model = build_model(cfg["model"])  # random weights: speed does not depend on them
    model.eval()
    _no_zero_parameters(model)
    gflop_per_image = 2 * classifier_macs(model) / 1e9
    peak_shapes = heaviest_linear_shapes(model, bs) + [(SQUARE, SQUARE, SQUARE)]
    peak_shapes = peak_chains(peak_shapes)
    shape = _input_shape(model)
    need_onnx = any(e.program == "onnx" for e in engines)
    common = dict(threads=threads, warmup=args.warmup)

    with tempfile.TemporaryDirectory(prefix="passl_infer_bench_") as tmp:
        model_dir = os.path.join(tmp, "model")
        weights = os.path.join(tmp, "weights.pdparams")  # the dygraph engine loads them too
        paddle.save(model.state_dict(), weights)
        del model
        info = export_model(cfg, model_dir, weights=weights, model_name=config_name(args.config),
                            fmt="onnx" if need_onnx else "paddle")
        model_files = {"model_file": os.path.join(model_dir, info["model_file"]),
                       "params_file": os.path.join(model_dir, info["params_file"]),
                       "onnx": os.path.join(model_dir, "inference.onnx"),
                       "config": args.config, "overrides": args.override, "weights": weights}
        jobs: Dict[str, Dict[str, Any]] = {}
        for engine in engines:
            jobs[engine.name] = dict(engine=engine.name, files=model_files,
                                     input_shape=[bs, *shape],
                                     output=os.path.join(tmp, f"out{len(jobs)}.npy"))
        for i, (m, k, n) in enumerate(peak_shapes):
            # Each shape bias-free and with a bias: Paddle Inference runs a Linear with a bias
            # as oneDNN's inner product on weights packed once, a bias-free one as its matmul,
            # and the inner product is the faster GEMM (Sapphire Rapids, S/16 shapes: fp32
            # 330-335 vs 303-318 GFLOP/s, bf16 1244-1418 vs 1008-1235): without it the "peak"
            # was below the model's own channel-MLP GEMMs.
            for bias in (False, True):
                peak_dir = os.path.join(tmp, f"peak{i}{'b' if bias else ''}")
                os.makedirs(peak_dir)
                files = _export_peak_program(peak_dir, k, n, onnx=need_onnx and i == 0,
                                             bias=bias)
                for engine in engines:
                    # Paddle runs every peak shape; the other engines the heaviest shape. No
                    # INT8 peak: a lone INT8 matmul pays the conversion of its float input and
                    # output, which a quantized model does once (measured: a model "at 141%")
                    if (engine.program == "dygraph" or (engine.program != "paddle" and i > 0)
                            or engine.precision == "int8"):
                        continue
                    jobs[f"peak {engine.name} {peak_label((m, k, n), bias)}"] = dict(
                        engine=engine.name, files=files, input_shape=[m, k], gemm=[m, k, n])
        children: Dict[str, TimedChild] = {}
        try:
            for name, job in jobs.items():  # set up one at a time: setups do not overlap
                print(f"  setting up {name}", flush=True)
                children[name] = TimedChild(name, "passl_mixer.benchmarks.infer",
                                            {**common, **job}, threads, tmp)
            best = {name: float("inf") for name in children}
            # Rounds visit every measurement in turn, so background load on a shared machine
            # hits all of them alike; each keeps its best time.
            for r in range(args.iters):
                for name, child in children.items():
                    time.sleep(PAUSE)
                    best[name] = min(best[name], child.time_best(RUNS_PER_VISIT))
                print(f"  round {r + 1}/{args.iters}: " + ", ".join(
                    f"{name} {best[name] * 1e3:.0f} ms" for name in children), flush=True)
        finally:
            for child in children.values():
                child.close()
        outputs = {name: np.load(job["output"]) for name, job in jobs.items()
                   if job.get("output") and os.path.exists(job["output"])}

    rows = {}
    for name, seconds in best.items():
        job = jobs[name]
        peak = "output" not in job
        flop = (2 * PEAK_DEPTH * float(np.prod(job["gemm"])) / 1e9 if peak
                else gflop_per_image * bs)
        first = json.loads(children[name].first)
        rows[name] = {"precision": first["precision"], "seconds": seconds, "peak": peak,
                      "gflops": float(flop / seconds),
                      "img_per_s": None if peak else bs / seconds}
        if first.get("note"):
            rows[name]["note"] = first["note"]
    reference = outputs["paddle fp32"]
    scale = max(1.0, float(np.abs(reference).max()))
    for name, out in outputs.items():
        rows[name]["max_diff_vs_paddle_fp32"] = float(np.abs(out - reference).max()) / scale
    peaks, warnings = shares_of_peak(rows)
    fastest = fastest_per_precision(rows)
    info = {"config": config_name(args.config), "batch_size": bs, "threads": threads,
            "gflop_per_image": gflop_per_image, "cpu": _cpu_name(),
            "cpu_has_bf16": cpu_has_bf16(), "paddle": paddle.__version__,
            "engine_versions": _engine_versions(engines)}
    _print_table(info, rows, peaks, skipped, warnings, fastest)
    return {**info, "results": rows, "peaks": peaks, "skipped": skipped,
            "fastest": fastest, "warnings": warnings}



def fastest_per_precision(rows: Dict[str, Dict[str, Any]]) -> Dict[str, str]:
    """Per precision that ran, the engine with the most img/s; for 'fp32' only engines whose
    outputs match Paddle fp32 within :data:`FP32_EXACT` compete."""
    fastest: Dict[str, str] = {}
    for name, row in rows.items():
        if row["peak"]:
            continue
        if row["precision"] == "fp32" and row.get("max_diff_vs_paddle_fp32", 0) > FP32_EXACT:
            continue
        best = fastest.get(row["precision"])
        if best is None or row["img_per_s"] > rows[best]["img_per_s"]:
            fastest[row["precision"]] = name
    return fastest


def _engine_versions(engines: Sequence[Engine]) -> Dict[str, str]:
    versions = {}
    for module in sorted({e.name.split()[0] for e in engines} - {"dygraph", "paddle"}):
        try:
            versions[module] = __import__(module).__version__
        except Exception:  # noqa: BLE001 - a version is a nicety
            versions[module] = "?"
    return versions


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", "r", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _print_table(info, rows, peaks, skipped, warnings, fastest) -> None:
    extra = ", ".join(f"{k} {v}" for k, v in info["engine_versions"].items())
    print(f"\n{info['config']}: batch {info['batch_size']}, {info['threads']} threads, "
          f"{info['gflop_per_image']:.3g} GFLOP/image, {info['cpu']} "
          f"(bf16 instructions: {'yes' if info['cpu_has_bf16'] else 'no'}), "
          f"Paddle {info['paddle']}{', ' + extra if extra else ''}")
    widths = (58, 8, 9, 8, 9, 10, 8)
    head = ("engine", "img/s", "ms/batch", "GFLOP/s", "% of peak", "max |diff|", "x paddle")
    reference = rows["paddle fp32"]["img_per_s"]
    print("| " + " | ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}"
                            for i, (c, w) in enumerate(zip(head, widths))) + " |")
    print("|" + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":"
                         for i, w in enumerate(widths)) + "|")
    for name, row in rows.items():
        label = name
        if row["precision"] not in name:
            label += f" (ran {row['precision']})"
        if row["peak"] and row["gflops"] == peaks.get(row["precision"]):
            label += " = PEAK"
        per_image = row["img_per_s"] is not None
        diff = row.get("max_diff_vs_paddle_fp32")
        cells = (label, f"{row['img_per_s']:.2f}" if per_image else "-",
                 f"{row['seconds'] * 1e3:.0f}" if per_image else "-", f"{row['gflops']:.0f}",
                 f"{100 * row['share_of_peak']:.0f}%" if "share_of_peak" in row else "-",
                 f"{diff:.1e}" if diff is not None else "-",
                 f"{row['img_per_s'] / reference:.2f}" if per_image else "-")
        print("| " + " | ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}"
                                for i, (c, w) in enumerate(zip(cells, widths))) + " |")
    print("max |diff|: vs Paddle fp32 on the same batch, relative to its largest output; "
          "x paddle: img/s relative to Paddle fp32.")
    print("fastest: " + ", ".join(f"{p} {n}" + (" (fp32-exact)" if p == "fp32" else "")
                                  for p, n in fastest.items()))
    for name, row in rows.items():
        if row.get("note"):
            print(f"{name}: {row['note']}")
    for name, why in skipped.items():
        print(f"not measured: {name} ({why})")
    for warning in warnings:
        print(f"WARNING: {warning}")


if __name__ == "__main__":
    _child_main(json.loads(sys.argv[1]))
