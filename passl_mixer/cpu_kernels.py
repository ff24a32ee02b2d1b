"""Fused CPU kernels for dygraph training: a Linear's bias + GELU and LayerNorm with their
gradients, bias adds, the residual add with stochastic depth, the patch stem's patch copy, and
AdamW with the global-norm gradient clip.

Paddle 3.3.1's CPU kernels for these are slow where training needs them: LayerNorm's gradient
runs on one core at ~30x the cost of its forward (14.7 ms against 0.46 ms for Mixer-S/16's
[16, 196, 512] at batch 16, Intel Xeon), GELU's gradient at 2x its forward, the bias add,
GELU and their gradients are four separate passes over the MLP's widest activations, and its
elementwise ops (add, multiply, the optimizer's per-parameter kernels) run on one core.
``cpu_kernels.cc`` does each in one or two passes over memory, split across the cores (1.2 ms
for that LayerNorm gradient). It is compiled with Paddle's ``cpp_extension`` the first time a
process needs it (~10 s, two lines in the log) and cached under ``~/.cache/passl_mixer`` (or
``$XDG_CACHE_HOME/passl_mixer``), one build per source, Paddle version and processor.

Used only where it is the same computation: dygraph training on a CPU in float32 with a
gradient wanted (the layers' ``forward`` checks :func:`wanted`; ``optim.AdamW`` its own
conditions). There an MLP's first Linear and its GELU run as one product and one kernel, so
forward hooks on that Linear or on the activation do not fire (under ``paddle.no_grad()`` or in
eval mode they do). Evaluation, traced and exported programs, GPUs and frozen layers run
Paddle's own ops, so exported models never contain a custom op. Where it cannot be built (no
C++ compiler, a read-only cache) the layers fall back to Paddle's ops with one warning;
``PASSL_MIXER_CPU_KERNELS=0`` turns it off.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import platform
import time
import warnings
from typing import Optional

import paddle

logger = logging.getLogger(__name__)

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpu_kernels.cc")
CFLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp"]
# OpenMP threads of the kernels, passed to every call: the command-line tools set it with
# Paddle's (cli.set_threads). Default: what Paddle uses when nobody sets its threads.
threads = int(os.environ.get("OMP_NUM_THREADS") or 1)

_ops = None
_failed: Optional[str] = None


def _cpu_name() -> str:
    """The processor's model and instruction-set flags: -march=native code built on one
    processor may not run on another, so each gets its own build."""
    seen = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key = line.split(":", 1)[0].strip()
                if key in ("model name", "flags") and key not in seen:
                    seen[key] = line
    except OSError:
        pass
    return "".join(seen.values()) or platform.processor()


def _build_dir() -> str:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    with open(SOURCE, "rb") as f:
        key = hashlib.sha256(f.read() + " ".join(CFLAGS + _openmp_link_flags()).encode()
                             + paddle.__version__.encode() + _cpu_name().encode()).hexdigest()[:12]
    return os.path.join(root, "passl_mixer", f"cpu_kernels_{key}")


def _openmp_link_flags() -> list:
    """Link the OpenMP runtime Paddle's MKL already runs on (its wheel's libiomp5), so the
    kernels and the matrix products share one pool of threads. With GCC's own libgomp beside
    it, the two pools compete for the cores: Intel's threads keep spinning ~200 ms after each
    product (KMP_BLOCKTIME) while the kernel's threads wait, which made them 4-10x slower
    inside a training step than alone."""
    libs = os.path.join(os.path.dirname(paddle.__file__), "libs")
    if os.path.exists(os.path.join(libs, "libiomp5.so")):
        return [f"-L{libs}", "-liomp5", f"-Wl,-rpath,{libs}"]
    return ["-fopenmp"]


@contextlib.contextmanager
def _locked(directory: str):
    """One process builds, the others (ranks of one launch) wait and then load its build."""
    import fcntl

    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "build.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ops():
    """The compiled kernels (built on the first call in a process), or None if they are off or
    cannot be built here."""
    global _ops, _failed
    if _ops is not None or _failed is not None:
        return _ops
    if os.environ.get("PASSL_MIXER_CPU_KERNELS", "1") == "0":
        _failed = "PASSL_MIXER_CPU_KERNELS=0"
        return None
    directory = _build_dir()
    start = time.time()
    try:
        with warnings.catch_warnings():  # "No ccache found": irrelevant for one small file
            warnings.simplefilter("ignore")
            from paddle.utils.cpp_extension import load

        with _locked(directory):
            fresh = not os.path.exists(os.path.join(directory, "built"))
            if fresh:
                logger.info("Building the fused CPU training kernels (once per machine, ~10 s) "
                            "in %s", directory)
            with _muted_paddle_build_log(), contextlib.redirect_stdout(io.StringIO()):
                _ops = load(name="passl_mixer_cpu_kernels", sources=[SOURCE],
                            extra_cxx_cflags=CFLAGS, extra_ldflags=_openmp_link_flags(),
                            build_directory=directory, verbose=False)
            open(os.path.join(directory, "built"), "w").close()
        if fresh:
            logger.info("Fused CPU training kernels built in %.0f s", time.time() - start)
    except Exception as exc:  # no compiler, no headers, a read-only cache: Paddle's ops remain
        _failed = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        logger.warning("The fused CPU training kernels (passl_mixer/cpu_kernels.cc) could "
                       "not be built in %s (%s); training runs Paddle's own ops (GELU, "
                       "LayerNorm, adds, AdamW), which are slower on a CPU. Set "
                       "PASSL_MIXER_CPU_KERNELS=0 to skip the attempt.", directory, _failed)
    return _ops


@contextlib.contextmanager
def _muted_paddle_build_log():
    """cpp_extension logs 'using custom operator only' at INFO, prints 'Compiling user custom
    op' and runs a build process (a no-op once built) that warns 'No ccache found', on every
    load."""
    build_log = logging.getLogger("utils.cpp_extension")
    level, warnings_env = build_log.level, os.environ.get("PYTHONWARNINGS")
    build_log.setLevel(logging.WARNING)
    os.environ["PYTHONWARNINGS"] = "ignore"  # read by the build process
    try:
        yield
    finally:
        build_log.setLevel(level)
        if warnings_env is None:
            os.environ.pop("PYTHONWARNINGS", None)
        else:
            os.environ["PYTHONWARNINGS"] = warnings_env


def cpu_training(training: bool, x, *params) -> bool:
    """Dygraph training in float32 on a CPU with some gradient wanted: where the layers may
    take a backward of their own (the fused kernels here, the PyLayers in ``layers``)."""
    return (training and paddle.in_dynamic_mode() and paddle.is_grad_enabled()
            and x.dtype == paddle.float32 and x.place.is_cpu_place()
            and not (x.stop_gradient and all(p.stop_gradient for p in params)))


def wanted(training: bool, x, *params) -> bool:
    """:func:`cpu_training`, and the kernels are built (building them on the first call)."""
    return cpu_training(training, x, *params) and ops() is not None


def _threads() -> int:
    return max(1, int(threads))


def linear_gelu(x, weight, bias, approximate: bool):
    """GELU(x @ W + b) for a channel Linear (x [..., C], W [C, H]): the product on 2-D rows
    (plain GEMMs in its backward too), then bias and GELU in one kernel."""
    h = paddle.matmul(x.reshape([-1, x.shape[-1]]), weight)
    y = _ops.mixer_bias_gelu(h, bias, approximate, -1, _threads())[0]  # [1]: the slope
    return y.reshape(list(x.shape[:-1]) + [weight.shape[-1]])


def token_linear_gelu(x, weight, bias, approximate: bool):
    """GELU(W^T x + b) along the token axis of x [B, S_in, C] (``layers.token_linear``)."""
    h = paddle.matmul(weight, x, transpose_x=True)
    return _ops.mixer_bias_gelu(h, bias, approximate, -2, _threads())[0]


def add_bias(y, bias, bias_axis: int = -1):
    """``y + bias``, the bias along the last axis (-1) or one per token along axis -2, with the
    kernel where it is built, else Paddle's add. No gradient: for the Linears' PyLayers,
    which make their own."""
    if ops() is None:
        return y + (bias if bias_axis == -1 else bias.unsqueeze(-1))
    return _ops.mixer_add_bias(y, bias, bias_axis, _threads())


def layer_norm(x, weight, bias, epsilon: float):
    return _ops.mixer_layer_norm(x, weight, bias, float(epsilon), _threads())[0]


def residual_add(x, y, scale):
    """``x + scale[b] * y`` over [B, ...] (``scale`` [B] or None for 1; x None: the scaled y)."""
    return _ops.mixer_residual_add(x, y, scale, _threads())


def patchify(x, patch_size: int):
    """x [B, C, H, W] -> [B, (H/p) (W/p), C p p]: the patches as rows, each in a [out, C, p, p]
    kernel's (c, i, j) order."""
    return _ops.mixer_patchify(x, int(patch_size), _threads())


def adamw(params, grads, moment1, moment2, beta1_pow, beta2_pow, lrs, decays, beta1: float,
          beta2: float, epsilon: float, clip_norm: float):
    """One AdamW step over all ``params``, updating them, their moments and powers in place,
    the gradients first clipped to the global norm ``clip_norm`` (0: not clipped); returns
    the gradients' global norm before clipping ([1]; 0 when not clipping)."""
    return _ops.mixer_adamw(params, grads, moment1, moment2, beta1_pow, beta2_pow, list(lrs),
                            list(decays), float(beta1), float(beta2), float(epsilon),
                            float(clip_norm), _threads())
