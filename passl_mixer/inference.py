"""Predictor: serve an exported model (``tools/export_model.py``) with Paddle Inference, or
with OpenVINO (``engine='openvino'``: the export's inference.onnx, or the INT8 model that
``tools/quantize.py`` calibrates, ``precision='int8'``; see passl_mixer.quantize).

    from passl_mixer.inference import Predictor
    predictor = Predictor("output/mixer_digits_infer")             # CPU, oneDNN, fp32
    scores = predictor.predict(["a.png", pil_image, uint8_array])  # [N, num_classes]
    predictor.topk(scores, k=5)   # per image: [{label, class_name, score}, ...]

Inputs go through exactly the preprocessing recorded in ``inference.yml`` (the evaluation
transforms, run by the same transform classes evaluation uses), so the predictor's output is
the trained model's output. CPU: oneDNN on, math threads = the cores this process may use;
``precision='bf16'`` uses oneDNN bfloat16 where the CPU has bf16 instructions and otherwise says
so and runs fp32. GPU: fp32, fp16 or bf16, TensorRT opt-in (``tensorrt=True``). One Predictor
may be called from several threads (its runs take turns). Two opt-ins change process-wide state
and are off by default (tools/predict.py turns both on): ``keep_memory=True``
(:func:`keep_freed_memory`, ~20% faster on large models) and ``quiet=True`` (Paddle's debug
print on a predictor's first run is dropped instead of reaching stdout).
"""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import json
import os
import shutil
import sys
import tempfile
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import paddle
import paddle.inference as paddle_infer
import yaml
from PIL import Image

from .data.datasets import load_rgb, to_rgb
from .data.transforms import build_transforms
from .logs import get_logger
from .models.backbones.base import inference_forms
from .models.layers import freeze_batch_norms
from .errors import CheckpointError, ConfigError, DataError, ShapeError
from .export_layout import INFO_FILE
from .fileio import read_text, require_dir, require_file

DEVICES = ("cpu", "gpu")
PRECISIONS = ("fp32", "bf16", "fp16", "int8")
# Engines a Predictor can run an export on: Paddle Inference (the program paddle.jit.save wrote)
# and OpenVINO (inference.onnx, or the calibrated INT8 model tools/quantize.py writes). Paddle
# 3.3.1 has no INT8 CPU kernels for these models (README, "INT8"); OpenVINO's run on VNNI/AMX.
ENGINES = ("paddle", "openvino")
PADDLE_PRECISIONS = ("fp32", "bf16", "fp16")
OPENVINO_PRECISIONS = ("fp32", "bf16", "int8")
INT8_KEY = "int8"  # the inference.yml section tools/quantize.py adds
_PADDLE_PRECISION = {"fp32": paddle_infer.PrecisionType.Float32,
                     "fp16": paddle_infer.PrecisionType.Half,
                     "bf16": paddle_infer.PrecisionType.Bfloat16}
GPU_MEMORY_POOL_MB = 256
DEFAULT_BATCH_SIZE = 32  # images per forward pass of a Predictor
TENSORRT_WORKSPACE = 1 << 30


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's core count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_has_bf16() -> bool:
    """True when the CPU has native bfloat16 instructions (AVX512-BF16 or AMX): where oneDNN's
    bf16 kernels are fast. Without them bf16 would be emulated and slower than fp32."""
    return bool(paddle.base.core.supports_bfloat16_fast_performance())


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameters, glibc's <malloc.h>
_kept_memory = False


def keep_freed_memory() -> bool:
    """Make this process keep the memory it frees, for reuse, instead of handing it back to the
    operating system; True once in effect (glibc, i.e. Linux), False where it does not apply.

    Paddle allocates every op's output afresh on CPU, and glibc serves large blocks (a
    Mixer-B/16 batch of 32 has 77 MB channel-MLP activations) with mmap and unmaps them when
    freed, so the next op's kernel first page-faults fresh zeroed memory into existence. On
    B/16 that was ~20% of the fp32 predictor's time. Serving every block from the heap
    (M_MMAP_MAX = 0) and never trimming it (M_TRIM_THRESHOLD) removes it, as ONNX Runtime's CPU
    memory arena does. It is process-wide and one-way: the process stays at its peak memory.
    """
    global _kept_memory
    if not _kept_memory:
        if not sys.platform.startswith("linux"):
            return False
        libc = ctypes.CDLL(None)  # the symbols already loaded into this process
        if not hasattr(libc, "gnu_get_libc_version"):  # not glibc (e.g. musl)
            return False
        _kept_memory = bool(libc.mallopt(_M_MMAP_MAX, 0)
                            and libc.mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1))
    return _kept_memory


def _set(config, new: str, old: str, *args) -> None:
    """Call ``config.new(*args)`` (Paddle 3.x names oneDNN 'onednn'), else ``config.old`` (2.6)."""
    (getattr(config, new, None) or getattr(config, old))(*args)


def _tensorrt_instead() -> str:
    where = ("device 'gpu' alone runs Paddle's own GPU kernels" if paddle.is_compiled_with_cuda()
             else "this build is CPU-only: use device 'cpu'")
    return f"run without --tensorrt ({where}), or install a paddlepaddle-gpu build with TensorRT"


def tensorrt_route(model_file: str) -> str:
    """How TensorRT can run this exported program, or a ConfigError (before anything is built)
    saying why it cannot: 'legacy' for a .pdmodel program (Paddle 2.x export), whose TensorRT
    is ``Config.enable_tensorrt_engine``; 'pir' for a .json PIR program (Paddle 3.x export),
    which that call does not convert: Paddle 3.x's documented route for PIR is the Paddle-
    TensorRT interface, ``paddle.tensorrt.convert`` (shipped only in builds with TensorRT, and
    it imports the ``tensorrt`` Python package)."""
    name = os.path.basename(model_file)
    version = tuple(getattr(paddle_infer, "get_trt_compile_version", lambda: (0, 0, 0))())
    built = f"is not compiled with TensorRT (paddle.inference.get_trt_compile_version() is " \
            f"{'.'.join(map(str, version))})" if not any(version) else ""
    if model_file.endswith(".pdmodel"):
        if built:
            raise ConfigError(f"tensorrt=True (--tensorrt) cannot run '{name}': this Paddle build "
                              f"{built}; {_tensorrt_instead()}.")
        return "legacy"
    if not model_file.endswith(".json"):
        raise ConfigError(f"tensorrt=True (--tensorrt): '{name}' is neither a .json (PIR) nor a "
                          f".pdmodel Paddle program; export the model again.")
    why = built
    if not why:
        try:
            import paddle.tensorrt as paddle_trt
            if not hasattr(paddle_trt, "convert"):
                why = "has a paddle.tensorrt without convert (Paddle 3.0 or newer has it)"
        except ImportError as exc:
            why = f"cannot import paddle.tensorrt ({type(exc).__name__}: {exc})"
    if why:
        raise ConfigError(f"tensorrt=True (--tensorrt) cannot run '{name}': it is a PIR program "
                          f"(what Paddle 3.x exports), which TensorRT takes only through "
                          f"paddle.tensorrt.convert, and this Paddle build {why}; "
                          f"{_tensorrt_instead()} and the tensorrt Python package.")
    return "pir"


def convert_for_tensorrt(model_file: str, input_name: str, input_shape: Sequence[int],
                         max_batch: int, precision: str) -> Tuple[str, str]:
    """Convert a PIR program with ``paddle.tensorrt.convert`` (its TensorRT subgraphs become
    engine ops, built for batches 1..``max_batch``) into a temporary directory removed when the
    process exits; returns the converted (program, parameters) paths for a GPU Config. Needs a
    TensorRT build (see :func:`tensorrt_route`); not run on the CPU-only development machine."""
    import paddle.tensorrt as paddle_trt

    mode = getattr(paddle_trt.PrecisionMode, precision.upper(), None)
    if mode is None:
        raise ConfigError(f"tensorrt=True (--tensorrt): this Paddle's paddle.tensorrt has no "
                          f"{precision} precision mode; use precision 'fp32' or 'fp16'.")
    shape = [int(d) for d in input_shape]
    trt_input = paddle_trt.Input(min_input_shape=[1, *shape],
                                 optim_input_shape=[max_batch, *shape],
                                 max_input_shape=[max_batch, *shape],
                                 input_data_type="float32", name=input_name)
    trt_config = paddle_trt.TensorRTConfig(inputs=[trt_input])
    trt_config.precision_mode = mode
    trt_config.workspace_size = TENSORRT_WORKSPACE
    out_dir = tempfile.mkdtemp(prefix="passl_mixer_tensorrt_")
    atexit.register(shutil.rmtree, out_dir, True)
    trt_config.save_model_dir = os.path.join(out_dir, "inference")  # a prefix, as in Paddle's docs
    try:
        with stdout_to_stderr():
            paddle_trt.convert(model_file, trt_config)
    except Exception as exc:  # noqa: BLE001 - TensorRT and Paddle raise many kinds
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"tensorrt=True (--tensorrt): paddle.tensorrt.convert failed on "
                          f"'{model_file}' ({type(exc).__name__}: {first}); run without "
                          f"--tensorrt.") from exc
    return trt_config.save_model_dir + ".json", trt_config.save_model_dir + ".pdiparams"


class InferenceModel(paddle.nn.Layer):
    """What an inference program traces: images -> logits (or probabilities), nothing else.

    Built from a model, it puts the model in evaluation mode and freezes its BatchNorms into
    the affine map they are there (``models.layers.FrozenBatchNorm``): Paddle 3.3.1's oneDNN
    ``batch_norm`` kernel crashes Paddle Inference on a linear probe's [B, C] features. Used by
    the export and by evaluation through an inference program."""

    def __init__(self, model: paddle.nn.Layer, softmax: bool = False):
        super().__init__()
        model.eval()
        freeze_batch_norms(model)
        self.model = model
        self.softmax = softmax

    def forward(self, images):
        out = self.model(images)
        return paddle.nn.functional.softmax(out, axis=-1) if self.softmax else out


def save_program(layer: paddle.nn.Layer, prefix: str, input_spec: Sequence[Any]) -> None:
    """``paddle.jit.save`` of ``layer`` (an :class:`InferenceModel`), traced with its backbones
    in their inference form (``models.backbones.base.inference_forms``: the same function in
    ops Paddle Inference runs faster on CPU); the model is left in its usual form."""
    with inference_forms(layer):
        paddle.jit.save(layer, prefix, input_spec=list(input_spec))


def paddle_config(model_file: str, params_file: str, device: str = "cpu",
                  precision: str = "fp32", threads: Optional[int] = None, onednn: bool = True,
                  tensorrt: bool = False, gpu_id: int = 0, input_name: str = "images",
                  input_shape: Optional[Sequence[int]] = None,
                  max_batch: int = 32) -> Tuple[paddle_infer.Config, str]:
    """A ``paddle.inference.Config`` for this device and precision, and the precision it will
    really run (bf16 falls back to fp32 on a CPU without bf16). ``input_name``, ``input_shape``
    ([C, H, W]) and ``max_batch`` give TensorRT its dynamic-shape range."""
    if device not in DEVICES:
        raise ConfigError(f"Unknown device '{device}'; accepted: {', '.join(DEVICES)}.")
    if precision not in PADDLE_PRECISIONS:
        if precision == "int8":
            raise ConfigError("precision 'int8' does not run on Paddle Inference (Paddle 3.3.1 "
                              "has no INT8 CPU kernels for these models): use engine "
                              "'openvino' (--engine openvino) on a model quantized with "
                              "tools/quantize.py.")
        raise ConfigError(f"Unknown precision '{precision}'; accepted: {', '.join(PRECISIONS)}.")
    route = tensorrt_route(model_file) if tensorrt and device == "gpu" else None
    if route == "pir":  # a TensorRT build: convert first, then serve the converted program
        if input_shape is None:
            raise ConfigError("TensorRT needs the input shape [C, H, W] for its shape range.")
        model_file, params_file = convert_for_tensorrt(model_file, input_name, input_shape,
                                                       max_batch, precision)
    config = paddle_infer.Config(model_file, params_file)
    config.disable_glog_info()
    if device == "cpu":
        if precision == "fp16":
            raise ConfigError("precision 'fp16' is for GPUs; on a CPU use 'bf16' or 'fp32'.")
        if tensorrt:
            raise ConfigError("TensorRT runs on GPUs only: use device='gpu' or drop tensorrt.")
        if precision == "bf16" and not onednn:
            raise ConfigError("precision 'bf16' on a CPU runs through oneDNN: keep onednn on.")
        if precision == "bf16" and not cpu_has_bf16():
            get_logger().warning("this CPU has no bf16 instructions (avx512_bf16 / amx_bf16): "
                                 "running fp32 instead of bf16")
            precision = "fp32"
        config.disable_gpu()
        config.set_cpu_math_library_num_threads(int(threads or available_cores()))
        if onednn:
            _set(config, "enable_onednn", "enable_mkldnn")
        if precision == "bf16":
            _set(config, "enable_onednn_bfloat16", "enable_mkldnn_bfloat16")
        return config, precision
    if not paddle.is_compiled_with_cuda():
        raise ConfigError("device='gpu' needs a CUDA build of Paddle (paddlepaddle-gpu); this "
                          "one is CPU-only. Use device='cpu'.")
    config.enable_use_gpu(GPU_MEMORY_POOL_MB, gpu_id, _PADDLE_PRECISION[precision])
    if route == "legacy":  # a .pdmodel program: Paddle Inference's TensorRT subgraph engine
        if input_shape is None:
            raise ConfigError("TensorRT needs the input shape [C, H, W] for its shape range.")
        config.enable_tensorrt_engine(workspace_size=TENSORRT_WORKSPACE, max_batch_size=max_batch,
                                      min_subgraph_size=3,
                                      precision_mode=_PADDLE_PRECISION[precision],
                                      use_static=False, use_calib_mode=False)
        config.set_trt_dynamic_shape_info({input_name: [1, *input_shape]},
                                          {input_name: [max_batch, *input_shape]},
                                          {input_name: [max_batch, *input_shape]})
    return config, precision


_FD_LOCK = threading.RLock()  # file descriptor 1 is the process's: one swap at a time


@contextlib.contextmanager
def stdout_to_stderr():
    """Send the process's C-level stdout to stderr for a while: Paddle's oneDNN passes print
    debug lines there (e.g. 'ReduceMeanCheckIfOneDNNSupport' on a predictor's first run), which
    would mix into the JSON lines tools/predict.py writes to stdout. Process-wide while it lasts
    (whatever any thread writes to stdout meanwhile goes to stderr); swaps are serialised by a
    lock, so concurrent callers always restore the real stdout."""
    with _stdout_to(2):
        yield


@contextlib.contextmanager
def stdout_discarded():
    """Like :func:`stdout_to_stderr`, but what the C-level code prints to stdout meanwhile is
    dropped (Python's own sys.stdout is flushed first and unaffected afterwards)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        with _stdout_to(devnull):
            yield
    finally:
        os.close(devnull)


@contextlib.contextmanager
def _stdout_to(fd: int):
    with _FD_LOCK:
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(fd, 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)


EXPORT_HINT = "create one with tools/export_model.py -c CFG --weights CKPT --output DIR"


def read_model_dir(model_dir: str) -> Dict[str, Any]:
    """``inference.yml`` of an export directory, checked to be well formed and to name files
    that exist; a missing, partial or damaged export is a CheckpointError naming the file."""
    require_dir(model_dir, "Model directory", CheckpointError,
                f"an export directory ({EXPORT_HINT})")
    info_path = os.path.join(model_dir, INFO_FILE)
    if not os.path.lexists(info_path):
        raise CheckpointError(f"'{model_dir}' holds no {INFO_FILE}: it is not an export "
                              f"directory, or the export did not finish. Run "
                              f"tools/export_model.py again.")
    expected = f"the {INFO_FILE} tools/export_model.py writes (export again)"
    text = read_text(info_path, f"The export's {INFO_FILE}", CheckpointError, expected)
    try:
        info = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CheckpointError(f"'{info_path}' is not valid YAML ({exc}); expected "
                              f"{expected}.") from None
    required = ("model_file", "params_file", "input", "output", "preprocess")
    missing = [k for k in required if not isinstance(info, dict) or k not in info]
    if missing:
        raise CheckpointError(f"'{info_path}' lacks {', '.join(missing)}: it was not written by "
                              f"tools/export_model.py or is damaged; export again.")
    problems = [f"{k} is {info[k]!r}, not a file name" for k in ("model_file", "params_file")
                if not isinstance(info[k], str) or not info[k]]
    shape = info["input"].get("shape") if isinstance(info["input"], dict) else None
    if not (isinstance(shape, list) and len(shape) == 4
            and all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
            and all(d > 0 for d in shape[1:])):
        problems.append(f"input.shape is {shape!r}, not [-1, C, H, W]")
    elif not isinstance(info["input"].get("name"), str):
        problems.append(f"input.name is {info['input'].get('name')!r}, not a name")
    if not isinstance(info["output"], dict) or \
            info["output"].get("kind") not in ("logits", "probabilities"):
        problems.append(f"output is {info['output']!r}, not {{kind: logits or probabilities, "
                        f"num_classes: N}}")
    if not isinstance(info["preprocess"], list) or not info["preprocess"]:
        problems.append(f"preprocess is {info['preprocess']!r}, not a list of transforms")
    names = info.get("class_names")
    if names is not None and not isinstance(names, list):
        problems.append(f"class_names is {names!r}, not a list")
    if problems:
        raise CheckpointError(f"'{info_path}' is damaged: {'; '.join(problems)}. Export again.")
    absent = [info[k] for k in ("model_file", "params_file")
              if not os.path.lexists(os.path.join(model_dir, info[k]))]
    if absent:
        raise CheckpointError(f"'{model_dir}' is incomplete: {', '.join(absent)} named in "
                              f"{INFO_FILE} is missing. Export again.")
    for key in ("model_file", "params_file"):
        require_file(os.path.join(model_dir, info[key]), f"The export's {key}", CheckpointError,
                     "the file tools/export_model.py writes (export again)", nonempty=True)
    return info


def check_program_files(model_dir: str, model_file: str, params_file: str,
                        config: Optional[paddle_infer.Config] = None, quiet: bool = False):
    """Load the program and parameters of an export with Paddle Inference (which reads every
    parameter) and return the predictor; a truncated or damaged file is a CheckpointError that
    names it. ``config`` defaults to a plain CPU one (no graph passes: a quick load).
    ``quiet``: what C-level code prints to stdout while the predictor is created is dropped."""
    model_path, params_path = (os.path.join(model_dir, model_file),
                               os.path.join(model_dir, params_file))
    if model_file.endswith(".json"):  # the PIR program: a truncated one is not valid JSON
        try:
            with open(model_path, "r", encoding="utf-8") as f:
                json.load(f)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"The program file '{model_path}' is truncated or damaged "
                                  f"(not valid JSON: {exc}); expected the Paddle program "
                                  f"tools/export_model.py writes. Export again.") from None
    if config is None:
        config = paddle_infer.Config(model_path, params_path)
        config.disable_glog_info()
        config.disable_gpu()
        config.switch_ir_optim(False)
    try:
        with (stdout_discarded() if quiet else contextlib.nullcontext()):
            return paddle_infer.create_predictor(config)
    except Exception as exc:  # noqa: BLE001 - Paddle's C++ errors arrive as many Python types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"Paddle Inference cannot load the export in '{model_dir}': the "
                              f"parameters file '{params_path}' is truncated or damaged, or does "
                              f"not belong to '{model_file}' ({type(exc).__name__}: {first}). "
                              f"Export again.") from None


def to_pil(image) -> Image.Image:
    """A file path, PIL image or uint8 array (H x W gray, H x W x 3 RGB or x 4 RGBA) as RGB."""
    if isinstance(image, (str, os.PathLike)):
        try:
            return load_rgb(os.fspath(image))
        except Exception as exc:  # noqa: BLE001 - PIL's decoders raise many exception types
            raise DataError(f"Cannot read image '{os.fspath(image)}': "
                            f"{type(exc).__name__}: {exc}") from None
    if isinstance(image, Image.Image):
        return to_rgb(image)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or \
                (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
            raise DataError(f"An image array must be uint8 with shape [H, W], [H, W, 1], "
                            f"[H, W, 3] (RGB) or [H, W, 4] (RGBA); got {image.dtype} "
                            f"{list(image.shape)}.")
        return to_rgb(Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[2] == 1
                                      else image))
    raise DataError(f"Cannot use a {type(image).__name__} as an image: give a file path, a PIL "
                    f"image or a uint8 numpy array.")


def preprocess_image(transforms, input_shape: Sequence[int], image) -> np.ndarray:
    """One image (path, PIL image or uint8 array) -> the float32 [C, H, W] model input, through
    ``transforms`` (built from inference.yml's ``preprocess``); a ShapeError when they do not
    give ``input_shape``. The Predictor and INT8 calibration (passl_mixer.quantize) share it."""
    # The transforms are deterministic; the generator is only their calling convention.
    out = transforms(to_pil(image), np.random.default_rng(0))
    if list(out.shape) != list(input_shape):
        what = f"'{os.fspath(image)}'" if isinstance(image, (str, os.PathLike)) else "image"
        raise ShapeError(f"The preprocessing in {INFO_FILE} turns {what} into shape "
                         f"{list(out.shape)}, but the model takes {list(input_shape)}: with a "
                         f"short-side Resize and no crop, a non-square image keeps its aspect "
                         f"ratio. Export with a crop (e.g. ResizeForEval) for such images.")
    return out


def require_openvino():
    """The ``openvino`` module, or a ConfigError naming the pip package (it is optional)."""
    try:
        import openvino
    except ImportError:
        raise ConfigError("engine 'openvino' (and precision 'int8') needs the optional package "
                          "openvino, which is not installed: pip install openvino (see "
                          "requirements/int8.txt).") from None
    return openvino


def openvino_model_file(model_dir: str, info: Dict[str, Any], precision: str) -> str:
    """The file OpenVINO runs for ``precision``: the INT8 model tools/quantize.py recorded in
    inference.yml, else inference.onnx (fp32 and bf16); a ConfigError says how to make it."""
    if precision == "int8":
        int8 = info.get(INT8_KEY)
        if not isinstance(int8, dict) or "model_file" not in int8:
            raise ConfigError(f"'{model_dir}' holds no INT8 model: calibrate one with "
                              f"tools/quantize.py --model-dir {model_dir} --calib-dir IMAGES "
                              f"(a few hundred images like the ones it will serve).")
        path = os.path.join(model_dir, int8["model_file"])
        require_file(path, "The INT8 model", CheckpointError,
                     "the file tools/quantize.py writes (quantize again)", nonempty=True)
        return path
    onnx = info.get("onnx")
    if not isinstance(onnx, dict) or "file" not in onnx:
        raise ConfigError(f"engine 'openvino' runs the export's ONNX model, and '{model_dir}' "
                          f"has none: export with tools/export_model.py ... --format onnx.")
    path = os.path.join(model_dir, onnx["file"])
    require_file(path, "The ONNX model", CheckpointError,
                 "the file tools/export_model.py --format onnx writes (export again)",
                 nonempty=True)
    return path


def openvino_compiled(model, precision: str, threads: Optional[int] = None,
                      batch: Optional[int] = None):
    """``model`` (a file's path, or an OpenVINO model in memory) compiled by OpenVINO for the
    CPU. fp32 is fp32 throughout; bf16 and int8 leave OpenVINO its default inference precision
    for the non-quantized ops (bf16 on CPUs with bf16 instructions, else fp32); int8 layers run
    OpenVINO's VNNI/AMX kernels. ``batch``: compiled for that batch size only (a static shape,
    which OpenVINO runs faster: Mixer-S/16 INT8, batch 32, Sapphire Rapids: 144 vs 154 ms);
    None keeps the batch dimension dynamic."""
    ov = require_openvino()
    is_path = isinstance(model, (str, os.PathLike))
    settings = {"INFERENCE_NUM_THREADS": int(threads or available_cores()),
                "PERFORMANCE_HINT": "LATENCY"}  # one request at a time, every core on it
    if precision == "fp32":
        settings["INFERENCE_PRECISION_HINT"] = "f32"
    elif precision == "bf16" and not cpu_has_bf16():
        get_logger().warning("this CPU has no bf16 instructions (avx512_bf16 / amx_bf16): "
                             "running fp32 instead of bf16")
        settings["INFERENCE_PRECISION_HINT"] = "f32"
        precision = "fp32"
    try:
        core = ov.Core()
        if batch is not None:
            model = core.read_model(model) if is_path else model.clone()
            shape = model.inputs[0].get_partial_shape()
            shape[0] = batch
            model.reshape({model.inputs[0].any_name: shape})
        return core.compile_model(model, "CPU", settings), precision
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError and its own types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        what = f"'{model}'" if is_path else "the model"
        raise CheckpointError(f"OpenVINO cannot load {what} ({type(exc).__name__}: "
                              f"{first}); export (or quantize) again.") from None


class OpenVinoRunner:
    """An OpenVINO model run in chunks of ``batch_size`` images: a full chunk runs the model
    compiled for exactly that batch (a static shape, faster: see :func:`openvino_compiled`),
    any other size (the last chunk) the model with a dynamic batch, compiled the first time
    one comes. Used by the Predictor and by the INT8 check, so the check measures the model as
    it is served (the two compilations' INT8 outputs differ slightly). Not thread-safe."""

    def __init__(self, model_path, precision: str, threads: Optional[int], batch_size: int):
        self._compile = functools.partial(openvino_compiled, model_path, precision, threads)
        self.batch_size = batch_size
        compiled, self.precision = self._compile(batch=batch_size)
        self.requests = {batch_size: compiled.create_infer_request()}

    def run_chunk(self, chunk: np.ndarray) -> np.ndarray:
        size = chunk.shape[0] if chunk.shape[0] == self.batch_size else None
        if size not in self.requests:
            self.requests[size] = self._compile()[0].create_infer_request()
        return np.array(self.requests[size].infer({0: chunk})[0], dtype=np.float32)

    def run(self, inputs: np.ndarray) -> np.ndarray:
        return np.concatenate([self.run_chunk(inputs[i:i + self.batch_size])
                               for i in range(0, len(inputs), self.batch_size)])


def _is_single_image(images) -> bool:
    return isinstance(images, (str, os.PathLike, Image.Image)) or \
        (isinstance(images, np.ndarray) and images.ndim in (2, 3))


def softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


class Predictor:
    """An exported model on Paddle Inference (or OpenVINO: ``engine``).

    Args:
        model_dir: a directory written by ``tools/export_model.py``.
        device: 'cpu' or 'gpu'.
        precision: 'fp32'; 'bf16' (CPU with bf16 instructions, else fp32 with a warning; or
            GPU); 'fp16' (GPU); 'int8' (OpenVINO, on the model ``tools/quantize.py`` calibrated).
        engine: 'paddle' (Paddle Inference, the default) or 'openvino' (CPU; runs the export's
            inference.onnx for fp32/bf16 and the INT8 model for int8; needs ``pip install
            openvino``). Default: 'openvino' for precision 'int8', else 'paddle'.
        threads: CPU math threads (default: the cores available to this process).
        batch_size: images per forward pass; longer inputs are split.
        tensorrt: run the GPU graph through TensorRT (built for batches up to ``batch_size``).
        onednn: use oneDNN kernels on CPU (on by default; bf16 needs it).
        gpu_id: which GPU.
        keep_memory: on CPU, call :func:`keep_freed_memory` (~20% faster for large models; the
            process then keeps its peak memory, process-wide). Off by default.
        quiet: Paddle's oneDNN passes print a debug line ('ReduceMeanCheckIfOneDNNSupport') to
            the C-level stdout on a predictor's first run. With ``quiet=True`` that first run
            happens here, on one image of zeros, with the process's stdout sent to /dev/null
            for its duration (see :func:`stdout_discarded`: process-wide for that moment,
            serialised by a lock); ``run`` itself never touches file descriptors. Off by
            default (the line then reaches stdout once).

    Thread-safe: concurrent ``run``/``predict`` calls on one Predictor take turns on its
    Paddle predictor (preprocessing runs in parallel).

    Attributes: ``info`` (inference.yml), ``engine``, ``precision`` (the one running),
    ``class_names`` (list or None), ``input_shape`` ([C, H, W]), ``output_kind`` ('logits' /
    'probabilities').
    """

    def __init__(self, model_dir: str, device: str = "cpu", precision: str = "fp32",
                 threads: Optional[int] = None, batch_size: int = DEFAULT_BATCH_SIZE,
                 tensorrt: bool = False, onednn: bool = True, gpu_id: int = 0,
                 keep_memory: bool = False, quiet: bool = False, engine: Optional[str] = None):
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ConfigError(f"batch_size must be an int >= 1, got {batch_size!r}.")
        if engine is None:  # INT8 runs on OpenVINO only; everything else defaults to Paddle
            engine = "openvino" if precision == "int8" else "paddle"
        if engine not in ENGINES:
            raise ConfigError(f"Unknown engine '{engine}'; accepted: {', '.join(ENGINES)}.")
        self.model_dir = model_dir
        self.info = read_model_dir(model_dir)
        self.engine = engine
        self.device = device
        self.batch_size = batch_size
        self.input_shape = [int(s) for s in self.info["input"]["shape"][1:]]
        self.output_kind = self.info["output"]["kind"]
        self.class_names = self.info.get("class_names")
        self.transforms = build_transforms(self.info["preprocess"])
        self._lock = threading.Lock()  # the input/output handles are shared: one run at a time
        if engine == "openvino":
            self._start_openvino(device, precision, threads, tensorrt)
        else:
            self._start_paddle(device, precision, threads, tensorrt, onednn, gpu_id,
                               keep_memory, quiet)

    def _start_openvino(self, device: str, precision: str, threads: Optional[int],
                        tensorrt: bool) -> None:
        if device != "cpu" or tensorrt:
            raise ConfigError("engine 'openvino' runs on the CPU here: use device 'cpu' without "
                              "tensorrt.")
        if precision not in OPENVINO_PRECISIONS:
            raise ConfigError(f"engine 'openvino' runs precision {', '.join(OPENVINO_PRECISIONS)}"
                              f", not '{precision}'.")
        model_path = openvino_model_file(self.model_dir, self.info, precision)
        self._openvino = OpenVinoRunner(model_path, precision, threads, self.batch_size)
        self.precision = self._openvino.precision

    def _start_paddle(self, device, precision, threads, tensorrt, onednn, gpu_id, keep_memory,
                      quiet) -> None:
        model_dir = self.model_dir
        config, self.precision = paddle_config(
            os.path.join(model_dir, self.info["model_file"]),
            os.path.join(model_dir, self.info["params_file"]), device=device,
            precision=precision, threads=threads, onednn=onednn, tensorrt=tensorrt,
            gpu_id=gpu_id, input_name=self.info["input"]["name"], input_shape=self.input_shape,
            max_batch=self.batch_size)
        if device == "cpu" and keep_memory:
            keep_freed_memory()
        self._predictor = check_program_files(model_dir, self.info["model_file"],
                                              self.info["params_file"], config, quiet=quiet)
        self._input = self._predictor.get_input_handle(self._predictor.get_input_names()[0])
        self._output = self._predictor.get_output_handle(self._predictor.get_output_names()[0])
        if quiet:
            with stdout_discarded():
                self._run_chunk(np.zeros([1, *self.input_shape], dtype=np.float32))

    def __repr__(self) -> str:
        return (f"Predictor({self.model_dir!r}, engine={self.engine!r}, device={self.device!r}, "
                f"precision={self.precision!r}, batch_size={self.batch_size})")

    def preprocess(self, image) -> np.ndarray:
        """One image (path, PIL image or uint8 array) -> the float32 [C, H, W] model input."""
        return preprocess_image(self.transforms, self.input_shape, image)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Preprocessed float32 [N, C, H, W] -> the model's outputs [N, num_classes]."""
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim != 4 or list(batch.shape[1:]) != self.input_shape:
            raise ShapeError(f"Predictor.run takes float32 arrays [N, "
                             f"{', '.join(map(str, self.input_shape))}], got shape "
                             f"{list(batch.shape)}.")
        outs = []
        for start in range(0, len(batch), self.batch_size):
            outs.append(self._run_chunk(np.ascontiguousarray(batch[start:start + self.batch_size])))
        if not outs:
            return np.zeros((0, self.info["output"]["num_classes"] or 0), dtype=np.float32)
        return np.concatenate(outs)

    def _run_chunk(self, chunk: np.ndarray) -> np.ndarray:
        if self.engine == "openvino":
            with self._lock:  # one infer request per shape: one run at a time
                return self._openvino.run_chunk(chunk)
        with self._lock:
            self._input.reshape(list(chunk.shape))
            self._input.copy_from_cpu(chunk)
            self._predictor.run()
            return self._output.copy_to_cpu()

    def predict(self, images) -> np.ndarray:
        """Outputs [N, num_classes] (logits, or probabilities if exported with softmax) for one
        image or a list of them (paths, PIL images, uint8 arrays), ``batch_size`` at a time."""
        items = [images] if _is_single_image(images) else list(images)
        outs = [self.run(np.stack([self.preprocess(x) for x in items[i:i + self.batch_size]]))
                for i in range(0, len(items), self.batch_size)]
        return np.concatenate(outs) if outs else self.run(np.zeros([0, *self.input_shape]))

    def classify_files(self, files: Sequence[str], k: int = 5):
        """Classify image files ``batch_size`` at a time, skipping the unreadable ones (a
        :class:`DataError` or :class:`ShapeError` from :meth:`preprocess`). Yields one
        ``(end, results, skipped)`` per batch: ``end`` the index in ``files`` just past the
        batch, ``results`` ``[(path, topk list)]`` for its readable images (see :meth:`topk`),
        ``skipped`` ``[(path, error)]`` for the others."""
        for start in range(0, len(files), self.batch_size):
            paths, arrays, skipped = [], [], []
            for path in files[start:start + self.batch_size]:
                try:
                    arrays.append(self.preprocess(path))
                    paths.append(path)
                except (DataError, ShapeError) as exc:
                    skipped.append((path, exc))
            results = (list(zip(paths, self.topk(self.run(np.stack(arrays)), k))) if arrays
                       else [])
            yield min(start + self.batch_size, len(files)), results, skipped

    def topk(self, outputs: np.ndarray, k: int = 5) -> List[List[Dict[str, Any]]]:
        """Per image, the ``k`` best classes: ``{label, class_name, score}`` with the score a
        probability (softmax of the logits unless the graph already ends in one)."""
        probs = np.asarray(outputs, dtype=np.float64)
        if self.output_kind != "probabilities":
            probs = softmax(probs)
        k = max(1, min(int(k), probs.shape[1]))
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        return [[{"label": int(j),
                  "class_name": self.class_names[j] if self.class_names else None,
                  "score": float(p[j])} for j in row] for p, row in zip(probs, order)]
