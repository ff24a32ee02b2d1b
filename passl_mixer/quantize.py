"""INT8 post-training quantization of an export, for OpenVINO's INT8 CPU kernels.

    from passl_mixer.quantize import quantize_export
    report = quantize_export("output/mixer_digits_infer", "data/digits/train", num_images=300)
    Predictor("output/mixer_digits_infer", precision="int8")   # engine 'openvino'

Why OpenVINO: Paddle 3.3.1 cannot run these models in INT8 on a CPU (its static PTQ cannot build
a Mixer, its dygraph PTQ exports programs that run fp32 kernels: README, "INT8"); ONNX Runtime's
static QDQ INT8 ran no faster than Paddle's fp32 predictor on the development machine, while
OpenVINO's (calibrated with NNCF) ran faster than Paddle's bf16 one.

What it does: reads the export's ``inference.onnx`` (tools/export_model.py --format onnx),
folds its constants and fuses LayerNorm/GELU with OpenVINO's own offline passes (without them
NNCF leaves the token-mixing matmuls, whose weight reaches them through a Transpose, in float,
and OpenVINO reorders every activation twice per block), calibrates activation ranges on
``num_images`` images sent through exactly the preprocessing in ``inference.yml`` (NNCF: INT8
weights per output channel, INT8 activations per tensor) in two forms of the token-mixing MLPs
(as exported, and as two linears between transposes), keeps the one that runs faster on this
machine (``token_form='auto'``; the shapes decide: :func:`_token_mlps_as_linear`), then
compares the INT8 model with the fp32 one (OpenVINO, fp32 throughout) on ``check_dir`` (or the
calibration images), both run as the Predictor runs them: the largest logit difference and the
top-1 agreement go into ``inference.yml`` beside the model files, ``inference_int8.xml`` +
``.bin``, written before it.
"""
from __future__ import annotations

import copy
import os
import shutil
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import yaml

from .data.datasets import list_images
from .data.transforms import build_transforms
from .errors import ConfigError, DataError, ShapeError
from .export_layout import INFO_FILE
from .fileio import write_error, write_text
from .inference import (DEFAULT_BATCH_SIZE, INT8_KEY, OpenVinoRunner, openvino_compiled,
                        openvino_model_file, preprocess_image, read_model_dir, require_openvino)
from .logs import get_logger

INT8_MODEL = "inference_int8.xml"  # OpenVINO IR; its weights go to inference_int8.bin
DEFAULT_CALIBRATION_IMAGES = 300


def require_nncf():
    """The ``nncf`` module (OpenVINO's calibration tool), or a ConfigError naming the package."""
    try:
        import nncf
    except ImportError:
        raise ConfigError("INT8 calibration needs the optional package nncf, which is not "
                          "installed: pip install nncf openvino (see requirements/int8.txt).") \
            from None
    return nncf


def pick_images(folder: str, count: int, what: str) -> List[str]:
    """``count`` images of ``folder`` spread evenly over its sorted list (so a class-per-folder
    dataset gives every class its share), or all of them when it holds fewer."""
    if not (isinstance(count, int) and count >= 1):
        raise ConfigError(f"{what}: the number of images must be an int >= 1, got {count!r}.")
    files = list_images(folder, what)
    if len(files) <= count:
        return files
    return [files[i] for i in np.linspace(0, len(files) - 1, count).round().astype(int)]


def load_inputs(files: List[str], info: Dict[str, Any], what: str
                ) -> Tuple[List[str], np.ndarray]:
    """(the files read, their model inputs [N, C, H, W]) through inference.yml's preprocessing;
    images that cannot be read are skipped with a warning, and none readable is a DataError."""
    transforms = build_transforms(info["preprocess"])
    shape = [int(s) for s in info["input"]["shape"][1:]]
    kept, arrays = [], []
    for path in files:
        try:
            arrays.append(preprocess_image(transforms, shape, path))
            kept.append(path)
        except (DataError, ShapeError) as exc:
            get_logger().warning("%s: skipped %s (%s)", what, path, exc)
    if not arrays:
        raise DataError(f"{what}: none of the {len(files)} image(s) could be read and "
                        f"preprocessed; give a folder of images like the ones the model serves.")
    return kept, np.stack(arrays).astype(np.float32)


def _prepared_model(onnx_path: str):
    """The ONNX model read by OpenVINO with constants folded and its patterns fused (MVN for
    LayerNorm, GELU), as OpenVINO's own model conversion does before saving IR."""
    ov = require_openvino()
    model = ov.Core().read_model(onnx_path)
    try:  # OpenVINO's offline passes (what ovc runs); the module is internal, so guard it
        from openvino._offline_transformations import apply_moc_transformations
    except ImportError:
        get_logger().warning("this OpenVINO has no openvino._offline_transformations: "
                             "quantizing without constant folding (the token-mixing matmuls "
                             "may stay in float)")
        return model
    apply_moc_transformations(model, cf=True)
    return _erf_gelus(ov, model)


def _erf_gelus(ov, model):
    """``model`` with every tanh-approximate Gelu computed in its erf form. GELU is the INT8
    model's largest cost that is not a matmul: oneDNN evaluates it in fp32 in the epilogue of
    each channel-MLP matmul and after each token-mixing one (Mixer-S/16, batch 32, Sapphire
    Rapids: 42 of 137 ms, measured by swapping it for a ReLU), and its erf form costs 9% less of
    the whole (137 -> 129 ms). The two forms differ by at most ~2e-4 per activation, far below
    INT8's own error, and the check against the fp32 model measures the model as it runs."""
    opset = ov.opset13
    for op in model.get_ordered_ops():
        if op.get_type_name() == "Gelu" and \
                str(op.get_attributes().get("approximation_mode", "")).lower() == "tanh":
            op.output(0).replace(opset.gelu(op.input_value(0), "erf").output(0))
    model.validate_nodes_and_infer_types()
    return model


def _save_model(ov, model, xml_path: str, bin_path: str) -> None:
    """Write the IR pair into a temporary folder beside it, then move the weights and (last)
    the graph into place: a reader never sees a graph without its weights."""
    directory = os.path.dirname(os.path.abspath(xml_path))
    tmp = tempfile.mkdtemp(prefix=".int8.", dir=directory)
    try:
        tmp_xml = os.path.join(tmp, os.path.basename(xml_path))
        # compress_to_fp16=False: the float constants left (biases, norms) stay fp32
        ov.save_model(model, tmp_xml, compress_to_fp16=False)
        os.replace(tmp_xml[:-len(".xml")] + ".bin", bin_path)
        os.replace(tmp_xml, xml_path)
    except OSError as exc:
        raise write_error(xml_path, exc, what="INT8 model") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def compare(fp32: np.ndarray, int8: np.ndarray, labels: Optional[np.ndarray] = None
            ) -> Dict[str, Any]:
    """Max logit difference (absolute and relative to the largest fp32 logit), top-1
    agreement, and with labels the top-1 accuracy of each."""
    out = {"images": int(len(fp32)),
           "max_abs_logit_diff": float(np.abs(int8 - fp32).max()),
           "max_logit_diff_rel": float(np.abs(int8 - fp32).max() / max(np.abs(fp32).max(), 1e-12)),
           "top1_agreement": float((int8.argmax(1) == fp32.argmax(1)).mean())}
    if labels is not None:
        out["top1_fp32"] = float((fp32.argmax(1) == labels).mean())
        out["top1_int8"] = float((int8.argmax(1) == labels).mean())
    return out


def folder_labels(files: List[str], class_names: Optional[List[str]]) -> Optional[np.ndarray]:
    """Labels from an ImageFolder layout (each image's parent folder is its class name), when
    every image's folder is one of the export's class names; else None (no accuracy)."""
    if not class_names:
        return None
    index = {name: i for i, name in enumerate(class_names)}
    parents = [os.path.basename(os.path.dirname(f)) for f in files]
    if not all(p in index for p in parents):
        return None
    return np.array([index[p] for p in parents])


TOKEN_FORMS = ("auto", "batched", "linear")


def _constant(output) -> Optional[np.ndarray]:
    node = output.get_node()
    return node.get_data() if node.get_type_name() == "Constant" else None


def _left_matrix(matmul) -> Optional[np.ndarray]:
    """The constant 2-D matrix A of a product ``A @ x`` (x not constant), else None."""
    if matmul is None or matmul.get_type_name() != "MatMul" or \
            matmul.get_attributes().get("transpose_b"):
        return None
    a = _constant(matmul.input_value(0))
    if a is None or a.ndim != 2 or _constant(matmul.input_value(1)) is not None:
        return None
    return a.T if matmul.get_attributes().get("transpose_a") else a


def _row_bias(node, rows: int) -> Optional[np.ndarray]:
    """The bias [rows] of ``node`` = y + b with b a constant [..., rows, 1], else None."""
    if node is None or node.get_type_name() != "Add":
        return None
    for i in (0, 1):
        b = _constant(node.input_value(i))
        if b is not None and b.ndim >= 2 and b.size == rows and b.shape[-2:] == (rows, 1):
            return b.reshape(rows)
    return None


def _only_consumer(output):
    targets = list(output.get_target_inputs())
    return targets[0].get_node() if len(targets) == 1 else None


def _token_mlps_as_linear(ov, model) -> int:
    """Rewrite every token-mixing MLP of ``model`` (``W2^T gelu(W1^T x + b1) (+ b2)`` on x [B,
    S, C], products with a constant on the left: how the export writes it) as the same function
    on the transposed table, ``(gelu(x^T W1 + b1) W2 + b2)^T``: two plain linears between two
    transposes. OpenVINO then runs each product as an INT8 fully-connected layer with bias and
    GELU in its epilogue; in the batched form the bias (one per row) and GELU run as a separate
    pass after the product. Which is faster depends on the model's shapes (on Sapphire Rapids
    with AMX, batch 32: Mixer-B/16 463 vs 501 ms, Mixer-S/16 152 vs 141 ms: the two transposes
    cost more than the pass saves at 512 channels), hence :func:`quantize_onnx`'s measured
    choice. Returns the number of MLPs rewritten."""
    opset = ov.opset13
    order = opset.constant(np.array([0, 2, 1], dtype=np.int64))
    count = 0
    for fc1 in model.get_ordered_ops():
        w1 = _left_matrix(fc1)                       # [D, S]
        if w1 is None or fc1.input_value(1).get_partial_shape().rank.get_length() != 3:
            continue
        add1 = _only_consumer(fc1.output(0))
        b1 = _row_bias(add1, w1.shape[0])
        act = _only_consumer(add1.output(0)) if b1 is not None else None
        if act is None or act.get_type_name() != "Gelu":
            continue
        fc2 = _only_consumer(act.output(0))
        w2 = _left_matrix(fc2)                       # [S, D]
        if w2 is None or w2.shape[1] != w1.shape[0]:
            continue
        last = fc2
        b2 = _row_bias(_only_consumer(fc2.output(0)), w2.shape[0])
        if b2 is not None:
            last = _only_consumer(fc2.output(0))
        h = opset.matmul(opset.transpose(fc1.input_value(1), order),
                         opset.constant(np.ascontiguousarray(w1.T)), False, False)
        h = opset.gelu(opset.add(h, opset.constant(b1)),
                       str(act.get_attributes()["approximation_mode"]).lower())
        y = opset.matmul(h, opset.constant(np.ascontiguousarray(w2.T)), False, False)
        if b2 is not None:
            y = opset.add(y, opset.constant(b2))
        last.output(0).replace(opset.transpose(y, order).output(0))
        count += 1
    model.validate_nodes_and_infer_types()
    return count


def _calibrated(nncf, model, calibration: np.ndarray):
    # one image per item: NNCF's statistics are per tensor, the batch dimension stays dynamic
    dataset = nncf.Dataset([x[None] for x in calibration])
    return nncf.quantize(model, dataset, subset_size=len(calibration))


def _ms_per_batch(models: Dict[str, Any], batch: np.ndarray, threads: Optional[int],
                  rounds: int = 5) -> Dict[str, float]:
    """Best time of each INT8 model on ``batch``, compiled as the Predictor compiles it for a
    full batch, rounds interleaved so that load from other work falls on all alike."""
    requests = {}
    for name, model in models.items():
        compiled, _ = openvino_compiled(model, "int8", threads, batch=len(batch))
        requests[name] = compiled.create_infer_request()
        requests[name].infer({0: batch})  # warm-up: the first run allocates
    best = {name: float("inf") for name in requests}
    for _ in range(rounds):
        for name, request in requests.items():
            start = time.perf_counter()
            request.infer({0: batch})
            best[name] = min(best[name], (time.perf_counter() - start) * 1e3)
    return best


def quantize_onnx(onnx_path: str, calibration: np.ndarray, token_form: str = "auto",
                  threads: Optional[int] = None) -> Tuple[Any, Dict[str, Any]]:
    """The OpenVINO model of ``onnx_path`` (folded and fused, see the module docstring) with
    INT8 weights per output channel and INT8 activations per tensor, their ranges calibrated on
    ``calibration`` [N, C, H, W] (preprocessed images); in memory. ``token_form`` is how
    token-mixing MLPs run (:func:`_token_mlps_as_linear`): 'batched' as exported, 'linear'
    rewritten, 'auto' both calibrated and timed on a batch of the calibration images on this
    machine, the faster kept. Returns the model and what was chosen (form, and the timings
    when measured)."""
    _check_token_form(token_form)
    ov = require_openvino()
    nncf = require_nncf()
    prepared = _prepared_model(onnx_path)
    forms = {"batched": prepared} if token_form != "linear" else {}
    if token_form != "batched":
        linear = prepared.clone() if token_form == "auto" else prepared
        if _token_mlps_as_linear(ov, linear) or token_form == "linear":
            forms["linear"] = linear  # (a model without token-mixing MLPs stays as it is)
    quantized = {name: _calibrated(nncf, model, calibration) for name, model in forms.items()}
    if len(quantized) == 1:
        (name, model), = quantized.items()
        return model, {"token_mixing": name}
    batch = calibration[:DEFAULT_BATCH_SIZE]
    times = _ms_per_batch(quantized, batch, threads)
    name = min(times, key=times.get)
    get_logger().info("token-mixing MLPs as %s (INT8, batch %d: batched %.1f ms, linear %.1f "
                      "ms)", name, len(batch), times["batched"], times["linear"])
    return quantized[name], {"token_mixing": name,
                             "ms_per_batch": {k: round(v, 2) for k, v in times.items()},
                             "timed_batch": len(batch)}


def _check_token_form(token_form: str) -> None:
    if token_form not in TOKEN_FORMS:
        raise ConfigError(f"Unknown token-mixing form '{token_form}'; accepted: "
                          f"{', '.join(TOKEN_FORMS)}.")


def quantize_export(model_dir: str, calib_dir: str,
                    num_images: int = DEFAULT_CALIBRATION_IMAGES,
                    check_dir: Optional[str] = None, check_images: int = 1000,
                    threads: Optional[int] = None, token_form: str = "auto") -> Dict[str, Any]:
    """Calibrate an INT8 model of the export in ``model_dir`` on ``num_images`` images of
    ``calib_dir``, write it beside the export and record it (and its check against fp32 on
    ``check_dir``, or on the calibration images) in inference.yml; return that record.
    ``token_form``: see :func:`quantize_onnx`."""
    _check_token_form(token_form)  # before reading any image
    info = read_model_dir(model_dir)
    ov = require_openvino()
    nncf = require_nncf()
    onnx_path = openvino_model_file(model_dir, info, "fp32")  # says: export with --format onnx
    calib_files, calib = load_inputs(pick_images(calib_dir, num_images, "--calib-dir"), info,
                                     "--calib-dir")
    if check_dir is None:
        check_files, check = calib_files, calib
    else:
        check_files, check = load_inputs(pick_images(check_dir, check_images, "--check-dir"),
                                         info, "--check-dir")

    quantized, form = quantize_onnx(onnx_path, calib, token_form, threads)
    xml_path = os.path.join(model_dir, INT8_MODEL)
    bin_path = xml_path[:-len(".xml")] + ".bin"
    _save_model(ov, quantized, xml_path, bin_path)

    fp32_model = OpenVinoRunner(onnx_path, "fp32", threads, DEFAULT_BATCH_SIZE)
    int8_model = OpenVinoRunner(xml_path, "int8", threads, DEFAULT_BATCH_SIZE)
    labels = folder_labels(check_files, info.get("class_names"))
    report = compare(fp32_model.run(check), int8_model.run(check), labels)
    record = {"engine": "openvino", "model_file": INT8_MODEL,
              "weights_file": os.path.basename(bin_path),
              "openvino_version": ov.__version__, "nncf_version": nncf.__version__,
              "calibration": {"dir": os.path.abspath(calib_dir), "images": int(len(calib))},
              **form,
              "check": {"dir": os.path.abspath(check_dir or calib_dir), **report}}
    new_info = copy.deepcopy(info)
    new_info[INT8_KEY] = record
    write_text(os.path.join(model_dir, INFO_FILE),
               yaml.safe_dump(new_info, sort_keys=False, default_flow_style=None,
                              allow_unicode=True), INFO_FILE)
    return record
