"""The GPU check (``python tools/gpu_check.py``): on a machine with a Paddle GPU build, run every
GPU path once and compare it with float32, in one command.

For each model (``s16`` and ``b16`` by default; ``--quick``: ``s16``):

* **training in every precision**: a few steps of the real :class:`~passl_mixer.engine.Trainer`
  (its AMP set-up: ``check_amp_support``, ``paddle.amp.decorate`` with ``o2_decorate_kwargs``,
  the float16 loss scaler; its micro-batch and optimizer-step code) on one fixed synthetic batch,
  in fp32, O1 fp16, O1 bf16, O2 fp16 and O2 bf16, every mode from the same initial weights (a
  weights file written once; the zero-initialised head is given random values so that the
  backbone gets gradients from the first step). Each mode's loss curve and final weights (the
  optimizer's float32 master weights under O2) are compared with the fp32 run's, against the
  tolerances of :data:`TOLERANCES`. A mode the GPU cannot run (bf16 below compute capability
  8.0, fp16 below 7.0) is skipped with the reason.
* **data parallel**: with two GPUs visible, the fp32 steps again under
  ``python -m paddle.distributed.launch --devices 0,1`` (NCCL, ``paddle.DataParallel``), each
  GPU taking half of the same global batch, compared with the one-GPU fp32 run.
* **export + predictor parity**: the model exported with :func:`passl_mixer.export.export_model`
  and run by :class:`passl_mixer.inference.Predictor` on the GPU in fp32 and fp16, and through
  TensorRT (fp32, fp16) when the build has it, compared with the dygraph model's fp32 outputs.

Every run is a child process of its own (``python -m passl_mixer.benchmarks.gpu_check JOB``):
AMP O2 leaves process-wide state behind (``master_grad`` registers the model's parameters
globally), a failing mode cannot disturb the next, and each reports its own peak GPU memory
(``paddle.device.cuda.max_memory_allocated``). The table gives, per check, img/s, peak memory,
the largest loss and weight differences (max Δloss, max Δw), the relative update error and
PASS / FAIL / SKIP with the reason; :func:`main` returns 1 if any check failed, else 0 (also on
a machine without a GPU, which is said in one line).

``device='cpu'`` (``--device cpu``) runs what a CPU can of the same plan (fp32 training, a
2-process gloo launch when asked, export + the fp32 CPU predictor's parity): how the tests
exercise this module on machines without a GPU.
"""
from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from .child import child_env


# -- the plan, as data ---------------------------------------------------------------------------
#: the float16 loss scale to start from. Lower than the Trainer's default (65536): a step whose
#: scaled gradients overflow is skipped (and the scale lowered), which is harmless in a long run
#: but would leave a few-step run a step behind fp32 and make the comparison meaningless
INIT_LOSS_SCALING = 1024.0
#: training precisions: name -> the ``amp:`` section of the run (None: float32, the reference)
MODES: Dict[str, Optional[Dict[str, Any]]] = {
    "fp32": None,
    "O1 fp16": {"enable": True, "level": "O1", "dtype": "float16",
                "init_loss_scaling": INIT_LOSS_SCALING},
    "O1 bf16": {"enable": True, "level": "O1", "dtype": "bfloat16"},
    "O2 fp16": {"enable": True, "level": "O2", "dtype": "float16",
                "init_loss_scaling": INIT_LOSS_SCALING},
    "O2 bf16": {"enable": True, "level": "O2", "dtype": "bfloat16"},
}

_TINY = dict(patch_size=4, hidden_dim=32, num_blocks=2, tokens_mlp_dim=16, channels_mlp_dim=64,
             img_size=16)
#: models: name -> (backbone options, classes). Any MlpMixer ``arch`` (s32 ... h14) is accepted
#: too, at 224x224 with 1000 classes; ``tiny`` is the tests' model (16x16 inputs).
MODELS: Dict[str, Dict[str, Any]] = {"tiny": {"backbone": _TINY, "num_classes": 10}}
DEFAULT_MODELS = ("s16", "b16")
QUICK_MODELS = ("s16",)

#: the optimizer of every training run: plain SGD with momentum (its update is proportional to
#: the gradient, so a gradient error shows as an update error; Adam's sign-like first steps
#: would hide it) and the global-norm clipping real configs use (float16's overflow risk)
OPTIMIZER = {"name": "SGD", "lr": 0.05, "momentum": 0.9, "grad_clip": 1.0}
SEED = 7
HEAD_INIT_STD = 0.02
PARITY_IMAGES = 8       # images of the predictor parity check
PREDICTOR_RUNS = 5      # timed predictor runs (img/s)
FAILED_OUTPUT_LINES = 25  # lines of a failed run's output shown


@dataclass(frozen=True)
class Tolerance:
    """What a check may differ from its reference. Training: ``loss`` bounds the largest
    difference of the per-step losses, ``update`` the relative update error
    ||(w - w_start) - (w_fp32 - w_0)|| / ||w_fp32 - w_0|| (all parameters, after the last step;
    see :func:`compare_training`). Predictors: ``output`` bounds the largest output difference
    relative to max(1, largest reference output)."""
    loss: Optional[float] = None
    update: Optional[float] = None
    output: Optional[float] = None

    def describe(self) -> str:
        parts = []
        if self.loss is not None:
            parts.append(f"max Δloss <= {self.loss:g}")
        if self.update is not None:
            parts.append(f"Δupdate <= {self.update:g}")
        if self.output is not None:
            parts.append(f"max Δout <= {self.output:g} x max(1, largest output)")
        return ", ".join(parts)


#: tolerances against the fp32 run (training) or the fp32 dygraph outputs (predictors) on the
#: same device. Half precision: bf16 keeps 8 mantissa bits, fp16 11, so bf16 gets the wider
#: bounds; the data-parallel run differs from one GPU only in summation order (and TF32 tiling
#: on Ampere or newer).
TOLERANCES: Dict[str, Tolerance] = {
    "O1 fp16": Tolerance(loss=0.02, update=0.05),
    "O2 fp16": Tolerance(loss=0.02, update=0.05),
    "O1 bf16": Tolerance(loss=0.05, update=0.15),
    "O2 bf16": Tolerance(loss=0.05, update=0.15),
    "data parallel": Tolerance(loss=2e-3, update=0.02),
    "predictor fp32": Tolerance(output=5e-3),
    "predictor fp16": Tolerance(output=0.05),
    "tensorrt fp32": Tolerance(output=5e-3),
    "tensorrt fp16": Tolerance(output=0.05),
}


@dataclass
class CheckResult:
    """One row of the table."""
    model: str
    check: str
    status: str = "PASS"            # PASS, FAIL or SKIP
    reason: str = ""
    img_per_s: Optional[float] = None
    peak_memory_mb: Optional[float] = None
    memory_kind: str = ""           # "GPU" (max_memory_allocated) or "RSS" (CPU runs)
    max_dloss: Optional[float] = None
    max_dweight: Optional[float] = None
    update_error: Optional[float] = None
    max_doutput: Optional[float] = None
    compute_dtype: Optional[str] = None  # what the first Linear computed in (training)
    tolerance: str = ""
    losses: List[float] = field(default_factory=list)


# -- comparisons ------------------------------------------------------------------------------
def _finite(values) -> bool:
    return all(math.isfinite(float(v)) for v in values)


def compare_training(ref_losses: Sequence[float], ref_weights: Dict[str, np.ndarray],
                     init_weights: Dict[str, np.ndarray], losses: Sequence[float],
                     weights: Dict[str, np.ndarray], tol: Tolerance,
                     start_weights: Optional[Dict[str, np.ndarray]] = None) -> Dict[str, Any]:
    """Compare a run with the fp32 reference: ``max_dloss``, ``max_dweight`` (final weights),
    ``update_error`` and ``status``/``reason`` (FAIL names every bound exceeded).

    The update error compares what the two runs' steps did: ||(w - w_start) - (w_fp32 - w_0)||
    / ||w_fp32 - w_0||. ``start_weights``: the weights the run really started from where they
    differ from ``init_weights`` (AMP O2 rounds them to half precision before its first step;
    that rounding is O2's forward precision, seen in the loss, not an error of the update)."""
    out: Dict[str, Any] = {"status": "PASS", "reason": ""}
    if len(losses) != len(ref_losses) or set(weights) != set(ref_weights):
        out.update(status="FAIL", reason=f"not comparable with fp32: {len(losses)} losses vs "
                   f"{len(ref_losses)}, {len(set(weights) ^ set(ref_weights))} weight names differ")
        return out
    if not _finite(losses):
        out.update(status="FAIL", reason=f"loss not finite: {[float(v) for v in losses]}")
        return out
    start_weights = start_weights or {}
    dloss = max(abs(float(a) - float(b)) for a, b in zip(losses, ref_losses))
    diff_sq = upd_sq = 0.0
    dweight = 0.0
    for name, ref in ref_weights.items():
        w = np.asarray(weights[name], dtype=np.float64)
        ref = np.asarray(ref, dtype=np.float64)
        if not np.all(np.isfinite(w)):
            out.update(status="FAIL", reason=f"weight {name} not finite")
            return out
        dweight = max(dweight, float(np.abs(w - ref).max()) if w.size else 0.0)
        init = np.asarray(init_weights[name], dtype=np.float64)
        start = np.asarray(start_weights.get(name, init), dtype=np.float64)
        d = (w - start) - (ref - init)
        diff_sq += float(np.sum(d * d))
        upd_sq += float(np.sum((ref - init) ** 2))
    update_error = math.sqrt(diff_sq) / math.sqrt(upd_sq) if upd_sq > 0 else \
        (0.0 if diff_sq == 0 else math.inf)
    out.update(max_dloss=dloss, max_dweight=dweight, update_error=update_error)
    failed = []
    if tol.loss is not None and dloss > tol.loss:
        failed.append(f"max Δloss {dloss:.3g} > {tol.loss:g}")
    if tol.update is not None and update_error > tol.update:
        failed.append(f"Δupdate {update_error:.3g} > {tol.update:g}")
    if failed:
        out.update(status="FAIL", reason="; ".join(failed))
    return out


def compare_outputs(ref: np.ndarray, out: np.ndarray, tol: Tolerance) -> Dict[str, Any]:
    """Compare predictor outputs with the dygraph reference (``max_doutput`` relative to
    max(1, max |ref|))."""
    ref, out = np.asarray(ref, np.float64), np.asarray(out, np.float64)
    if ref.shape != out.shape:
        return {"status": "FAIL", "reason": f"output shape {list(out.shape)} vs {list(ref.shape)}"}
    if not np.all(np.isfinite(out)):
        return {"status": "FAIL", "reason": "output not finite"}
    rel = float(np.abs(out - ref).max()) / max(1.0, float(np.abs(ref).max())) if ref.size else 0.0
    result = {"status": "PASS", "reason": "", "max_doutput": rel}
    if tol.output is not None and rel > tol.output:
        result.update(status="FAIL", reason=f"max Δout {rel:.3g} > {tol.output:g}")
    return result


# -- the table ----------------------------------------------------------------------------------
_COLUMNS = (("model", 6), ("check", 24), ("img/s", 9), ("peak MB", 9), ("max Δloss", 9),
            ("max Δw", 9), ("Δupdate", 9), ("max Δout", 9), ("result", 6))


def _num(value: Optional[float], fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_table(results: Sequence[CheckResult]) -> str:
    """The results as a Markdown table (max Δ: the largest absolute difference), one row per
    check, its reason in the last column."""
    def line(cells):
        return "| " + " | ".join(c.ljust(w) if i < 2 else c.rjust(w)
                                 for i, (c, (_, w)) in enumerate(zip(cells, _COLUMNS))) + " |"

    rows = [line([name for name, _ in _COLUMNS]) + " why",
            "|" + "|".join("-" * (w + 2) if i < 2 else "-" * (w + 1) + ":"
                           for i, (_, w) in enumerate(_COLUMNS)) + "|-----"]
    for r in results:
        memory = _num(r.peak_memory_mb, ".0f")
        if r.peak_memory_mb is not None and r.memory_kind != "GPU":
            memory += f" {r.memory_kind}"
        row = line([r.model, r.check, _num(r.img_per_s, ".1f"), memory,
                    _num(r.max_dloss, ".2e"), _num(r.max_dweight, ".2e"),
                    _num(r.update_error, ".2e"), _num(r.max_doutput, ".2e"), r.status])
        rows.append(row + (f" {r.reason.replace('|', '/')}" if r.reason else ""))
    return "\n".join(rows)


def format_tolerances(results: Sequence[CheckResult]) -> str:
    """The tolerances the checks of ``results`` were held to, one line per check that ran."""
    lines = ["tolerances (training vs the fp32 run, predictors vs the dygraph fp32 outputs; "
             "Δupdate = ||(w - w_start) - (w_fp32 - w_0)|| / ||w_fp32 - w_0|| over all "
             "parameters after the last step, w_start = w_0 except under O2, whose weights start "
             "rounded to half precision):"]
    seen = set()
    for r in results:
        if r.tolerance and r.status != "SKIP" and r.check not in seen:
            seen.add(r.check)
            lines.append(f"  {r.check}: {r.tolerance}")
    return "\n".join(lines)


# -- the machine ----------------------------------------------------------------------------------
def no_gpu_reason() -> Optional[str]:
    """None when Paddle sees a GPU, else the one line saying why not."""
    import paddle

    if not paddle.device.is_compiled_with_cuda():
        return (f"No GPU: this Paddle build is CPU-only (paddle {paddle.__version__}); the GPU "
                f"check needs paddlepaddle-gpu and a visible GPU.")
    if paddle.device.cuda.device_count() < 1:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        return (f"No GPU: this Paddle build (paddle {paddle.__version__}) has CUDA but sees no "
                f"GPU" + (f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else "")
                + "; check nvidia-smi and the driver.")
    return None


def gpu_info() -> Dict[str, Any]:
    import paddle

    major, minor = paddle.device.cuda.get_device_capability(0)
    return {"name": paddle.device.cuda.get_device_name(0), "capability": f"{major}.{minor}",
            "count": paddle.device.cuda.device_count(), "paddle": paddle.__version__,
            "cuda": paddle.version.cuda(), "cudnn": paddle.version.cudnn()}


def amp_support_reason(dtype: str, device: str = "gpu:0") -> Optional[str]:
    """None when ``device`` runs ``dtype`` AMP, else why not (the Trainer's own check,
    :func:`passl_mixer.engine.amp.check_amp_support`)."""
    from ..engine.amp import check_amp_support
    from ..errors import ConfigError

    try:
        check_amp_support(dtype, device)
    except ConfigError as exc:
        text = str(exc)
        start = text.find("this GPU")
        return text[start:text.find(" cannot run")] if start >= 0 else text.split(":")[0]
    return None


def tensorrt_reason(model_file: str) -> Optional[str]:
    """None when TensorRT can run this export here, else why not (``tensorrt_route``'s refusal)."""
    from ..errors import ConfigError
    from ..inference import tensorrt_route

    try:
        tensorrt_route(model_file)
    except ConfigError as exc:
        return str(exc).split("; ")[0]
    return None


# -- configs --------------------------------------------------------------------------------------
def model_config(name: str) -> Dict[str, Any]:
    """The ``model:`` section of a model of the check (``tiny`` or an MlpMixer arch)."""
    from ..models.backbones.mlp_mixer import ARCHS

    if name in MODELS:
        backbone = dict(name="MlpMixer", **MODELS[name]["backbone"])
        classes, width = MODELS[name]["num_classes"], MODELS[name]["backbone"]["hidden_dim"]
    elif name in ARCHS:
        backbone = {"name": "MlpMixer", "arch": name, "img_size": 224}
        classes, width = 1000, ARCHS[name]["hidden_dim"]
    else:
        from ..errors import ConfigError
        raise ConfigError(f"Unknown model '{name}' for the GPU check; accepted: "
                          f"{', '.join([*MODELS, *ARCHS])}.")
    backbone["drop_path_rate"] = 0.0  # no randomness between the modes
    return {"name": "ImageClassifier", "backbone": backbone,
            "head": {"name": "LinearClsHead", "num_classes": classes, "in_channels": width}}


def _image_size(model_cfg: Dict[str, Any]) -> int:
    return int(model_cfg["backbone"].get("img_size", 224))


def _train_config(model_cfg, image_root, output_dir, per_device_batch, steps, weights, amp):
    size = _image_size(model_cfg)
    transforms = [{"name": "Resize", "size": [size, size]}, {"name": "Normalize"}]
    cfg = {"model": model_cfg,
           "data": {"train": {"dataset": {"name": "ImageFolder", "root": image_root},
                              "transforms": transforms, "batch_size": per_device_batch,
                              "num_workers": 0}},
           "optimizer": dict(OPTIMIZER),
           "train": {"epochs": 1, "output_dir": output_dir, "seed": SEED, "max_steps": steps,
                     "loggers": [], "log_interval": 1000, "log_seconds": 0},
           "weights": weights}
    if amp:
        cfg["amp"] = dict(amp)
    return cfg


def _write_image_folder(root: str, n: int) -> None:
    """``n`` small PNGs in two class folders: the Trainer builds its loader from them; the
    steps themselves feed a synthetic batch."""
    from PIL import Image

    rng = np.random.default_rng(SEED)
    for i in range(n):
        d = os.path.join(root, f"class_{i % 2}")
        os.makedirs(d, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(
            os.path.join(d, f"{i:04d}.png"))


def synthetic_batch(model_cfg: Dict[str, Any], batch: int, seed: int = SEED):
    """The fixed training batch: normalised-looking images and labels, from ``seed``."""
    rng = np.random.default_rng(seed)
    size = _image_size(model_cfg)
    images = rng.standard_normal((batch, 3, size, size), dtype=np.float32)
    labels = rng.integers(0, model_cfg["head"]["num_classes"], batch).astype("int64")
    return images, labels


# -- child jobs (each in its own process) ---------------------------------------------------------
def _peak_memory(device: str):
    import paddle

    if device.startswith("gpu"):
        return paddle.device.cuda.max_memory_allocated() / 2 ** 20, "GPU"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "RSS"


def _synchronize(device: str) -> None:
    import paddle

    if device.startswith("gpu"):
        paddle.device.cuda.synchronize()


def _write_initial_weights(job: Dict[str, Any]) -> None:
    """The weights every mode starts from: the model as seeded, its zero-initialised matrices
    (the classifier head) given small random values."""
    import paddle

    from ..checkpoints.weights import save_weights
    from ..registry import build_model

    paddle.seed(SEED)
    model = build_model(job["cfg"]["model"])
    rng = np.random.default_rng(SEED + 1)
    for _, p in model.named_parameters():
        if len(p.shape) == 2 and not np.any(p.numpy()):
            p.set_value(rng.normal(0.0, HEAD_INIT_STD, p.shape).astype("float32"))
    save_weights(model.state_dict(), job["cfg"]["weights"])
    np.savez(job["out"] + "_init.npz", **{k: p.numpy() for k, p in model.named_parameters()})


def compute_dtype_probe(model) -> List[str]:
    """Record the output dtype of the first ``nn.Linear`` the model calls (a list, filled on
    the first forward): the precision its matrix multiplies really ran in, since Paddle falls
    back to float32 silently. Every Linear is watched: the Mixer's token-mixing MLP uses its
    Linear layers' weights without calling them."""
    import paddle

    seen: List[str] = []

    def hook(layer, inputs, output):
        if not seen:
            seen.append(str(output.dtype).replace("paddle.", ""))

    for m in model.sublayers():
        if isinstance(m, paddle.nn.Linear):
            m.register_forward_post_hook(hook)
    return seen


def float32_weights(model, optimizer) -> Dict[str, np.ndarray]:
    """The model's parameters as float32 arrays; a half-precision parameter (AMP O2) is read
    from the optimizer's float32 master weight when it has one (what the next step updates)."""
    import paddle

    masters = getattr(optimizer, "_master_weights", None) or {}
    out = {}
    for name, p in model.named_parameters():
        source = p
        if p.dtype in (paddle.float16, paddle.bfloat16):
            source = masters.get(p.name, p)
        out[name] = source.astype("float32").numpy()
    return out


def _train_job(job: Dict[str, Any]) -> Dict[str, Any]:
    """A few Trainer steps on the fixed batch; writes the final weights to ``out.npz``."""
    import paddle

    from ..engine import Trainer
    from ..engine import distributed as dist

    device = job["device"]
    paddle.set_device(device)
    if job.get("write_init"):
        _write_initial_weights(job)
    trainer = Trainer(job["cfg"], config_name="gpu_check")
    world, rank = trainer.world_size, trainer.rank
    seen = compute_dtype_probe(trainer.model)
    images, labels = synthetic_batch(job["cfg"]["model"], job["global_batch"])
    per = job["global_batch"] // world
    x = paddle.to_tensor(images[rank * per:(rank + 1) * per])
    y = paddle.to_tensor(labels[rank * per:(rank + 1) * per])
    trainer.train_model.train()
    half = {name for name, p in trainer.model.named_parameters()
            if p.dtype in (paddle.float16, paddle.bfloat16)}
    # where O2 really starts: the weights as decorate cast them (or their master copies)
    start_weights = {f"start:{k}": v for k, v in
                     float32_weights(trainer.model, trainer.optimizer).items() if k in half}
    losses, times, skipped = [], [], 0
    for _ in range(job["steps"]):
        _synchronize(device)
        start = time.perf_counter()
        out = trainer._forward_backward(x, y, sync=True)  # the Trainer's own step code
        loss = float(out["loss"])
        trainer._optimizer_step()
        _synchronize(device)
        times.append(time.perf_counter() - start)
        found_inf = getattr(trainer.scaler, "_found_inf", None) if trainer.scaler else None
        skipped += int(found_inf is not None and bool(found_inf))
        total = dist.all_reduce_(paddle.to_tensor([loss], dtype="float64"), "sum")
        losses.append(float(total[0]) / world)
    timed = times[1:] or times  # the first step includes kernel selection
    memory, kind = _peak_memory(device)
    result = {"losses": losses, "img_per_s": job["global_batch"] / (sum(timed) / len(timed)),
              "peak_memory_mb": memory, "memory_kind": kind, "amp_enabled": trainer.amp_enabled,
              "compute_dtype": seen[0] if seen else None, "scaler_skipped_steps": skipped,
              "param_dtypes": sorted({str(p.dtype).replace("paddle.", "")
                                      for p in trainer.model.parameters()})}
    if rank == 0:
        np.savez(job["out"] + ".npz", **float32_weights(trainer.model, trainer.optimizer),
                 **start_weights)
    return result


def _export_job(job: Dict[str, Any]) -> Dict[str, Any]:
    """Export the model with the initial weights; write the dygraph fp32 outputs on a batch."""
    import paddle

    from ..export import build_model_with_weights, export_model

    paddle.set_device(job["device"])
    cfg = job["cfg"]
    model = build_model_with_weights(cfg, cfg["weights"])
    images, _ = synthetic_batch(cfg["model"], PARITY_IMAGES, seed=SEED + 2)
    with paddle.no_grad():
        ref = model(paddle.to_tensor(images)).numpy()
    info = export_model(cfg, job["export_dir"], weights=cfg["weights"], model_name=job["name"])
    np.savez(job["out"] + ".npz", images=images, ref=ref)
    return {"model_file": info["model_file"]}


def _predictor_job(job: Dict[str, Any]) -> Dict[str, Any]:
    from ..inference import Predictor

    data = np.load(job["reference"])
    images = data["images"]
    predictor = Predictor(job["export_dir"], device=job["device"], precision=job["precision"],
                          tensorrt=job["tensorrt"], batch_size=len(images), quiet=True)
    out = predictor.run(images)
    start = time.perf_counter()
    for _ in range(PREDICTOR_RUNS):
        predictor.run(images)
    seconds = (time.perf_counter() - start) / PREDICTOR_RUNS
    np.save(job["out"] + ".npy", out)
    return {"precision": predictor.precision, "img_per_s": len(images) / seconds}


JOBS: Dict[str, Callable[[Dict[str, Any]], Dict[str, Any]]] = {
    "train": _train_job, "export": _export_job, "predictor": _predictor_job}


def child_main(job_file: str) -> None:
    """Run one job (a JSON file) and write its result to ``<out>.json`` (rank 0 only)."""
    with open(job_file, "r", encoding="utf-8") as f:
        job = json.load(f)
    if not job["device"].startswith("gpu"):
        from ..cli import set_threads
        set_threads(job.get("threads"))
    result = JOBS[job["kind"]](job)
    from ..ranks import is_main
    if is_main():
        with open(job["out"] + ".json", "w", encoding="utf-8") as f:
            json.dump(result, f)


_LAUNCH_SCRIPT = ("import sys\nfrom passl_mixer.benchmarks.gpu_check import child_main\n"
                  "child_main(sys.argv[1])\n")


class _Runner:
    """Starts the jobs as child processes in ``workdir`` and reads their results."""

    def __init__(self, workdir: str, device: str, threads: Optional[int], echo):
        self.workdir, self.device, self.threads, self.echo = workdir, device, threads, echo
        self.count = 0

    def run(self, kind: str, label: str, launch: Optional[List[str]] = None,
            timeout: float = 3600, **job) -> Dict[str, Any]:
        """The job's result; raises RuntimeError with the end of its output if it failed."""
        self.count += 1
        out = os.path.join(self.workdir, f"job{self.count:02d}_{kind}")
        job = {"kind": kind, "device": self.device, "threads": self.threads, "out": out, **job}
        job_file = out + "_job.json"
        with open(job_file, "w", encoding="utf-8") as f:
            json.dump(job, f)
        env = child_env()
        env.setdefault("GLOG_minloglevel", "2")
        if launch is None:
            cmd = [sys.executable, "-m", "passl_mixer.benchmarks.gpu_check", job_file]
        else:
            script = os.path.join(self.workdir, "launch_child.py")
            with open(script, "w", encoding="utf-8") as f:
                f.write(_LAUNCH_SCRIPT)
            log_dir = out + "_log"
            cmd = [sys.executable, "-m", "paddle.distributed.launch", *launch,
                   "--log_dir", log_dir, script, job_file]
        self.echo(f"  {label} ...")  # a B/16 run takes a while: say what is running
        start = time.perf_counter()
        with open(out + ".log", "w+", encoding="utf-8", errors="replace") as log:
            try:
                proc = subprocess.run(cmd, env=env, cwd=self.workdir, stdout=log,
                                      stderr=subprocess.STDOUT, timeout=timeout)
                code = proc.returncode
            except subprocess.TimeoutExpired:
                code = f"timeout after {timeout:.0f} s"
            if code != 0 or not os.path.isfile(out + ".json"):
                log.seek(0)
                text = log.read()
                if launch is not None and os.path.isdir(out + "_log"):
                    for name in sorted(os.listdir(out + "_log")):
                        with open(os.path.join(out + "_log", name), errors="replace") as f:
                            text += f"\n--- {name}\n" + f.read()
                tail = "\n".join(text.rstrip().splitlines()[-FAILED_OUTPUT_LINES:])
                self.echo(f"  {label}: FAILED (exit status {code}); its output ends:\n"
                          + "\n".join(f"    {ln}" for ln in tail.splitlines()))
                raise RuntimeError(f"exit status {code}: {_last_error(text)}", text[-4000:])
        with open(out + ".json", "r", encoding="utf-8") as f:
            result = json.load(f)
        result["out"] = out
        result["seconds"] = time.perf_counter() - start
        self.echo(f"  {label}: done in {result['seconds']:.1f} s")
        return result


def _last_error(text: str) -> str:
    """The line that says what went wrong in a child's output (the exception line)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ("Error" in ln or "error" in ln or "Exception" in ln) and not ln.startswith("File "):
            return ln[:300]
    return lines[-1][:300] if lines else "no output"


def _load_npz(path: str) -> Dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


# -- the plan -------------------------------------------------------------------------------------
@dataclass
class PlannedCheck:
    """One check to run, decided before anything runs: ``kind`` 'train' (``amp``: the amp
    section, None for fp32), 'data_parallel' or 'predictor' (``precision``, ``tensorrt``);
    ``skip``: why it will not run (empty: it runs). TensorRT's availability is known only once
    the model is exported (the program format), so it is decided then."""
    model: str
    check: str
    kind: str
    tolerance: Optional[str] = None      # a key of TOLERANCES
    amp: Optional[Dict[str, Any]] = None
    precision: str = "fp32"
    tensorrt: bool = False
    skip: str = ""


def plan(models: Sequence[str], modes: Sequence[str] = tuple(MODES), device: str = "gpu",
         data_parallel: bool = False, predictors: bool = True,
         amp_support: Callable[[str], Optional[str]] = amp_support_reason
         ) -> List[PlannedCheck]:
    """The checks, in order, per model: ``train fp32`` (the reference, always first), each
    AMP mode of ``modes`` (skipped on a CPU, where dygraph AMP is off, and where
    ``amp_support(dtype)`` gives a reason), the data-parallel run, then the predictors: fp32,
    fp16, TensorRT fp32 and fp16 (on a CPU all but fp32 skipped)."""
    from ..errors import ConfigError

    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ConfigError(f"Unknown mode(s) {', '.join(unknown)}; accepted: {', '.join(MODES)}.")
    on_gpu = device == "gpu"
    checks: List[PlannedCheck] = []
    for model in models:
        checks.append(PlannedCheck(model, "train fp32", "train"))
        for mode in modes:
            if mode == "fp32":
                continue
            amp = MODES[mode]
            skip = ("a GPU mode (on a CPU only bfloat16 O1 trains in half precision, through "
                    "paddle.jit.to_static; scripts/check_cpu_bf16_training.py checks it)"
                    if not on_gpu
                    else amp_support(amp["dtype"]) or "")
            checks.append(PlannedCheck(model, f"train {mode}", "train", mode, amp, skip=skip))
        if data_parallel:
            checks.append(PlannedCheck(model, "data parallel fp32" if on_gpu
                                       else "2 processes fp32 (gloo)", "data_parallel",
                                       "data parallel"))
        if not predictors:
            continue
        # the same rows on a CPU, where only the fp32 predictor can run
        for precision, trt in (("fp32", False), ("fp16", False), ("fp32", True), ("fp16", True)):
            name = f"{'tensorrt' if trt else 'predictor'} {precision}"
            skip = ""
            if not on_gpu:
                skip = ("TensorRT runs on GPUs only" if trt
                        else "fp16 predictors run on GPUs only" if precision == "fp16" else "")
            checks.append(PlannedCheck(model, name, "predictor", name, precision=precision,
                                       tensorrt=trt, skip=skip))
    return checks


def run_checks(models: Sequence[str] = DEFAULT_MODELS, modes: Sequence[str] = tuple(MODES),
               steps: int = 6, batch_size: int = 32, device: str = "gpu",
               data_parallel: Optional[bool] = None, predictors: bool = True,
               workdir: Optional[str] = None, threads: Optional[int] = None,
               amp_support: Callable[[str], Optional[str]] = amp_support_reason,
               echo: Callable[[str], None] = print) -> List[CheckResult]:
    """Run the checks of :func:`plan` and return one :class:`CheckResult` per check.
    ``device``: 'gpu' (the check) or 'cpu' (what a CPU can run of it: fp32 training, export +
    CPU predictors). ``data_parallel``: None = when two GPUs are visible; True on a CPU
    launches two gloo processes. ``amp_support(dtype)``: None if the GPU runs that AMP dtype,
    else why not. ``workdir``: where the children write (default: a temporary directory,
    removed at the end). ``threads``: CPU math threads of each child (CPU runs)."""
    from ..errors import ConfigError

    if steps < 1 or batch_size < 2 or batch_size % 2:
        raise ConfigError(f"steps must be >= 1 and the batch size an even number >= 2 (the "
                          f"data-parallel check halves it); got {steps} and {batch_size}.")
    if data_parallel is None:
        import paddle
        data_parallel = device == "gpu" and paddle.device.cuda.device_count() >= 2
    model_cfgs = {name: model_config(name) for name in models}  # unknown names fail first
    checks = plan(models, modes, device, data_parallel, predictors, amp_support)
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="passl_gpu_check_") as tmp:
            return _execute(checks, model_cfgs, steps, batch_size,
                            _Runner(tmp, device, threads, echo))
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    return _execute(checks, model_cfgs, steps, batch_size, _Runner(workdir, device, threads, echo))


def _execute(checks, model_cfgs, steps, batch, runner) -> List[CheckResult]:
    image_root = os.path.join(runner.workdir, "images")
    _write_image_folder(image_root, batch)
    results = []
    for name, model_cfg in model_cfgs.items():
        runner.echo(f"{name}:")
        mine = [c for c in checks if c.model == name]
        results += _ModelChecks(runner, name, model_cfg, steps, batch, image_root).run(mine)
    return results


class _ModelChecks:
    """The planned checks of one model, run in order against its fp32 reference."""

    def __init__(self, runner, name, model_cfg, steps, batch, image_root):
        self.runner, self.name, self.model_cfg = runner, name, model_cfg
        self.steps, self.batch, self.image_root = steps, batch, image_root
        self.weights = os.path.join(runner.workdir, f"{name}_init.pdparams")
        self.on_gpu = runner.device == "gpu"
        self.ref = self.export = None
        self.export_failed = ""

    def cfg_for(self, run: str, amp, per_device: int) -> Dict[str, Any]:
        return _train_config(self.model_cfg, self.image_root,
                             os.path.join(self.runner.workdir, f"{self.name}_{run}"),
                             per_device, self.steps, self.weights, amp)

    def run(self, checks: List[PlannedCheck]) -> List[CheckResult]:
        rows = []
        for c in checks:
            row = CheckResult(c.model, c.check, tolerance=TOLERANCES[c.tolerance].describe()
                              if c.tolerance else "")
            rows.append(row)
            if c.skip:
                row.status, row.reason = "SKIP", c.skip
                continue
            try:
                if c.kind == "train" and c.amp is None:
                    self.reference(row)
                elif c.kind in ("train", "data_parallel"):
                    self.compared_run(row, c)
                else:
                    self.predictor(row, c)
            except RuntimeError as exc:  # the child failed: its error line is the reason
                row.status, row.reason = "FAIL", exc.args[0]
        return rows

    def reference(self, row: CheckResult) -> None:
        try:
            ref = self.runner.run("train", f"{self.name} train fp32 (reference)",
                                  write_init=True, cfg=self.cfg_for("fp32", None, self.batch),
                                  global_batch=self.batch, steps=self.steps)
        except RuntimeError as exc:
            raise RuntimeError(f"the fp32 run failed: {exc.args[0]}") from None
        _fill_run(row, ref)
        self.ref = {"losses": ref["losses"], "weights": _load_npz(ref["out"] + ".npz"),
                    "init": _load_npz(ref["out"] + "_init.npz")}
        if not _finite(ref["losses"]):
            row.status, row.reason = "FAIL", f"fp32 loss not finite: {ref['losses']}"
            self.ref = None
        else:
            row.reason = (f"reference; loss {ref['losses'][0]:.4f} -> {ref['losses'][-1]:.4f} "
                          f"in {self.steps} steps")

    def compared_run(self, row: CheckResult, c: PlannedCheck) -> None:
        if self.ref is None:
            row.status, row.reason = "SKIP", "no fp32 reference (it failed)"
            return
        if c.kind == "data_parallel":
            launch = ["--devices", "0,1"] if self.on_gpu else ["--nproc_per_node", "2"]
            run = self.runner.run("train", f"{self.name} {c.check}", launch=launch,
                                  cfg=self.cfg_for("dp", None, self.batch // 2),
                                  global_batch=self.batch, steps=self.steps)
        else:
            run = self.runner.run("train", f"{self.name} {c.check}",
                                  cfg=self.cfg_for(c.tolerance.replace(" ", "_"), c.amp,
                                                   self.batch),
                                  global_batch=self.batch, steps=self.steps)
        judge_run(row, run, self.ref, TOLERANCES[c.tolerance], c.amp)
        if c.kind == "data_parallel" and row.status == "PASS":
            row.reason = f"global batch {self.batch} = 2 x {self.batch // 2}, vs 1 x {self.batch}"

    def predictor(self, row: CheckResult, c: PlannedCheck) -> None:
        if self.export is None and not self.export_failed:
            size = _image_size(self.model_cfg)
            cfg = {"model": self.model_cfg, "weights": self.weights,
                   "data": {"val": {"transforms": [{"name": "Resize", "size": [size, size]},
                                                   {"name": "Normalize"}]}}}
            export_dir = os.path.join(self.runner.workdir, f"{self.name}_export")
            if not os.path.isfile(self.weights):  # the fp32 run writes them; it failed
                self.export_failed = "no initial weights (the fp32 run failed)"
            else:
                try:
                    result = self.runner.run("export", f"{self.name} export", cfg=cfg,
                                             export_dir=export_dir, name=self.name)
                    self.export = {"dir": export_dir, "reference": result["out"] + ".npz",
                                   "model_file": os.path.join(export_dir, result["model_file"])}
                except RuntimeError as exc:
                    self.export_failed = f"export failed: {exc.args[0]}"
        if self.export_failed:
            row.status, row.reason = "FAIL", self.export_failed
            return
        if c.tensorrt:
            why = tensorrt_reason(self.export["model_file"])
            if why:
                row.status, row.reason = "SKIP", why
                return
        run = self.runner.run("predictor", f"{self.name} {c.check}",
                              export_dir=self.export["dir"], reference=self.export["reference"],
                              precision=c.precision, tensorrt=c.tensorrt)
        row.img_per_s = run["img_per_s"]
        verdict = compare_outputs(_load_npz(self.export["reference"])["ref"],
                                  np.load(run["out"] + ".npy"), TOLERANCES[c.tolerance])
        row.status, row.reason = verdict["status"], verdict["reason"]
        row.max_doutput = verdict.get("max_doutput")
        if run["precision"] != c.precision:
            row.status, row.reason = "SKIP", f"the predictor ran {run['precision']}"


def _fill_run(row: CheckResult, run: Dict[str, Any]) -> None:
    row.img_per_s, row.losses, row.compute_dtype = (run["img_per_s"], run["losses"],
                                                    run["compute_dtype"])
    row.peak_memory_mb, row.memory_kind = run["peak_memory_mb"], run["memory_kind"]


def judge_run(row: CheckResult, run: Dict[str, Any], ref: Dict[str, Any], tol: Tolerance,
              amp: Optional[Dict[str, Any]]) -> None:
    """Fill ``row`` from a child's training ``run`` compared with the fp32 reference ``ref``
    ({losses, weights, init}): the tolerances, and for AMP that AMP really ran (the first
    Linear's output in the half dtype; O2: half-precision weights), since Paddle falls back
    to float32 without a word."""
    _fill_run(row, run)
    saved = _load_npz(run["out"] + ".npz")
    os.remove(run["out"] + ".npz")  # B/16: 240 MB per run
    weights = {k: v for k, v in saved.items() if not k.startswith("start:")}
    start = {k[len("start:"):]: v for k, v in saved.items() if k.startswith("start:")}
    verdict = compare_training(ref["losses"], ref["weights"], ref["init"], run["losses"],
                               weights, tol, start)
    row.status, row.reason = verdict["status"], verdict["reason"]
    row.max_dloss = verdict.get("max_dloss")
    row.max_dweight = verdict.get("max_dweight")
    row.update_error = verdict.get("update_error")
    notes = []
    if amp:
        half = amp["dtype"]
        if not run["amp_enabled"] or run["compute_dtype"] != half:
            row.status = "FAIL"
            notes.append(f"AMP did not take effect: the first Linear computed in "
                         f"{run['compute_dtype']}, not {half}")
        if amp["level"] == "O2" and half not in run["param_dtypes"]:
            row.status = "FAIL"
            notes.append(f"O2 left no {half} weights (parameters: "
                         f"{', '.join(run['param_dtypes'])})")
        if run.get("scaler_skipped_steps"):
            notes.append(f"the loss scaler skipped {run['scaler_skipped_steps']} step(s) "
                         f"(overflow at loss scale {amp.get('init_loss_scaling')}): the run is "
                         f"that many steps behind fp32")
    row.reason = "; ".join([r for r in [row.reason, *notes] if r])


# -- the tool -------------------------------------------------------------------------------------
def add_args(parser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help=f"only {', '.join(QUICK_MODELS)} (default models: "
                             f"{', '.join(DEFAULT_MODELS)})")
    parser.add_argument("--models", default=None, metavar="A,B",
                        help="comma-separated: any MlpMixer arch (s32, s16, b32, b16, l32, l16, "
                             "h14; 224x224, 1000 classes) or tiny")
    parser.add_argument("--modes", default=",".join(MODES), metavar="A,B",
                        help=f"training precisions, comma-separated (default: all: "
                             f"{', '.join(MODES)}); fp32 always runs, as the reference")
    parser.add_argument("--steps", type=int, default=6, help="training steps per mode")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="global batch (even: the data-parallel check halves it per GPU)")
    parser.add_argument("--data-parallel", choices=("auto", "on", "off"), default="auto",
                        help="the 2-GPU launch: auto = when two GPUs are visible; on with "
                             "--device cpu: two gloo processes")
    parser.add_argument("--no-predictors", action="store_true",
                        help="skip export + predictor parity")
    parser.add_argument("--json", default=None, metavar="OUT", help="also write the results here")
    parser.add_argument("--workdir", default=None, metavar="DIR",
                        help="keep every run's files here (job, output log, weights, export); "
                             "default: a temporary directory, removed")
    parser.add_argument("--device", choices=("gpu", "cpu"), default="gpu",
                        help="cpu: run what a CPU can of the same checks (fp32 training, "
                             "export + CPU predictor parity), to try the tool without a GPU")
    from ..cli import add_threads_arg
    add_threads_arg(parser)  # the CPU math threads of each run's process (--device cpu)


def _split(text: Optional[str]) -> List[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def main(args, echo: Callable[[str], None] = print) -> int:
    """The tool: 0 if every check passed or there is no GPU, 1 if any failed."""
    import paddle

    from ..cli import current_threads

    if args.device == "gpu":
        reason = no_gpu_reason()
        if reason:
            echo(reason)
            return 0
        info = gpu_info()
        echo(f"GPU check: {info['count']} x {info['name']} (compute capability "
             f"{info['capability']}), paddle {info['paddle']}, CUDA {info['cuda']}, "
             f"cuDNN {info['cudnn']}")
    else:
        info = {"paddle": paddle.__version__, "threads": current_threads()}
        echo(f"GPU check on the CPU (--device cpu: fp32 training and the fp32 predictor "
             f"only), paddle {paddle.__version__}")
    models = _split(args.models) or list(QUICK_MODELS if args.quick else DEFAULT_MODELS)
    modes = _split(args.modes)
    if "fp32" not in modes:
        modes.insert(0, "fp32")
    results = run_checks(models, modes, steps=args.steps, batch_size=args.batch_size,
                         device=args.device,
                         data_parallel={"auto": None, "on": True, "off": False}[
                             args.data_parallel],
                         predictors=not args.no_predictors,
                         threads=current_threads() if args.device == "cpu" else None,
                         workdir=args.workdir, echo=echo)
    echo("")
    echo(format_tolerances(results))
    echo(f"{args.steps} steps, global batch {args.batch_size}, optimizer {OPTIMIZER}, fp16 loss "
         f"scale from {INIT_LOSS_SCALING:g}; img/s "
         f"over the steps after the first; peak MB: max_memory_allocated of the run's process"
         + (" (RSS on a CPU)" if args.device == "cpu" else ""))
    echo(format_table(results))
    failed = [r for r in results if r.status == "FAIL"]
    counts = {status: sum(r.status == status for r in results)
              for status in ("PASS", "SKIP", "FAIL")}
    echo(f"{counts['PASS']} passed, {counts['SKIP']} skipped, {counts['FAIL']} failed"
         + (f": {', '.join(f'{r.model} {r.check}' for r in failed)}" if failed else ""))
    if args.json:
        from ..fileio import atomic_path
        with atomic_path(args.json, "--json") as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump({"device": args.device, "machine": info, "steps": args.steps,
                           "batch_size": args.batch_size, "optimizer": OPTIMIZER,
                           "tolerances": {k: asdict(v) for k, v in TOLERANCES.items()},
                           "results": [asdict(r) for r in results], "passed": not failed},
                          f, indent=1)
        echo(f"results written to {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    child_main(sys.argv[1])
