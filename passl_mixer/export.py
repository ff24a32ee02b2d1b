"""Export a model to a Paddle Inference directory (and optionally ONNX).

    DIR/inference.json + inference.pdiparams    the program (PIR, Paddle 3.x) and its weights
    DIR/inference.pdmodel + inference.pdiparams  the same on Paddle 2.6 (legacy program format)
    DIR/inference.onnx                           with fmt='onnx' (needs paddle2onnx)
    DIR/inference.yml                            everything a predictor needs besides the program

The program takes float32 images [batch, C, H, W] (batch left dynamic) that went through the
preprocessing recorded in ``inference.yml`` and returns logits, or probabilities when softmax is
put in the graph. ``inference.yml`` is written last and the directory is swapped in whole
(``fileio.atomic_dir``), so a directory that holds ``inference.yml`` is always complete.

The ``export:`` config section (all optional):
    softmax: false          put a softmax at the end of the graph
    class_names: [...]      or the path of a text file with one name per line (line i = class i);
                            default: the class names of ``data.val.dataset`` when it can be read
    preprocess: [...]       transforms applied before the model; default ``data.val.transforms``
"""
from __future__ import annotations

import copy
import math
import os
import tempfile
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import paddle
import paddle.nn as nn
import yaml

from .data.transforms import check_output_size  # importing .data registers the datasets
from .checkpoints import load_initial_weights
from .logs import get_logger
from .errors import CheckpointError, ConfigError, DataError, PasslMixerError
from .export_layout import INFO_FILE, PREFIX, program_file
from .fileio import atomic_dir, read_text, require_dir, short_write_reason, write_error
from .inference import InferenceModel, check_program_files, save_program, stdout_discarded
from .registry import DATASETS, build_model
from .schema import Field, Section, section, validate_section

FORMATS = ("paddle", "onnx")


@section("export")
class ExportSection(Section):
    softmax: bool = Field(False, description="put a softmax at the end of the graph")
    class_names: Union[None, str, List[str]] = Field(
        None, description="class names, or a text file with one per line (line i = class i); "
        "default: the class names of data.val.dataset")
    preprocess: Optional[List[Dict[str, Any]]] = Field(
        None, description="transforms applied before the model; default data.val.transforms")

# Transforms with no randomness: the only ones a predictor may apply.
DETERMINISTIC_TRANSFORMS = ("Resize", "CenterCrop", "ResizeForEval", "Normalize")
# onnxruntime vs Paddle: max abs difference allowed, relative to the largest output (min 1)
ONNX_PARITY_RTOL = 1e-4


def build_model_with_weights(cfg: Dict[str, Any], weights: Optional[str] = None) -> nn.Layer:
    """``cfg['model']`` in eval mode, started from ``weights`` (a training checkpoint, .pdparams
    or .safetensors, loaded strictly) or else from what the config names (``weights``,
    ``model.pretrained``); with neither, the random initial weights (a smoke test)."""
    if "model" not in cfg:
        raise ConfigError("The config needs a 'model' section to export.")
    model = build_model(cfg["model"])
    if load_initial_weights(model, {**cfg, "weights": weights or cfg.get("weights")}) is None:
        get_logger().warning("no weights given: exporting the random initial weights "
                             "(a smoke test; pass --weights CKPT for a trained model)")
    model.eval()
    return model


def input_shape(model: nn.Layer) -> List[int]:
    """[C, H, W] the model takes, read from its backbone."""
    backbone = getattr(model, "backbone", model)
    size, channels = getattr(backbone, "img_size", None), getattr(backbone, "in_channels", None)
    if size is None or channels is None:
        raise ConfigError(f"Cannot tell the input size of {type(backbone).__name__}: export "
                          f"needs a backbone with 'img_size' and 'in_channels' attributes.")
    return [int(channels), int(size[0]), int(size[1])]


def export_settings(cfg: Dict[str, Any], softmax: Optional[bool] = None) -> Dict[str, Any]:
    """The ``export:`` section with defaults; ``softmax`` (if not None) overrides it."""
    settings = copy.deepcopy(validate_section(ExportSection, cfg.get("export"), "export"))
    if softmax is not None:
        settings["softmax"] = bool(softmax)
    return settings


def preprocess_config(cfg: Dict[str, Any], settings: Dict[str, Any],
                      shape: Sequence[int]) -> List[Dict[str, Any]]:
    """The preprocessing transforms (``export.preprocess`` or ``data.val.transforms``), checked
    to be deterministic and to turn an image into exactly the model's input shape."""
    transforms = settings["preprocess"]
    where = "export.preprocess"
    if transforms is None:
        transforms = ((cfg.get("data") or {}).get("val") or {}).get("transforms")
        where = "data.val.transforms"
    if not transforms:
        raise ConfigError("Export needs the evaluation preprocessing: set 'data.val.transforms' "
                          "or 'export.preprocess' (e.g. [{name: ResizeForEval, img_size: 224}, "
                          "{name: Normalize}]).")
    names = [t.get("name") if isinstance(t, dict) else t for t in transforms]
    unsupported = [n for n in names if n not in DETERMINISTIC_TRANSFORMS]
    if unsupported:
        raise ConfigError(f"{where} holds {unsupported}; a predictor applies only deterministic "
                          f"transforms: {', '.join(DETERMINISTIC_TRANSFORMS)}.")
    if names[-1] != "Normalize":
        raise ConfigError(f"{where} must end with Normalize (it makes the float CHW array the "
                          f"model takes), got {names}.")
    # the same check the loader makes, with the model's input shape as the required size
    check_output_size(transforms, where, expected=shape)
    return copy.deepcopy(list(transforms))


def class_names(cfg: Dict[str, Any], settings: Dict[str, Any],
                num_classes: Optional[int]) -> Optional[List[str]]:
    """Class names from ``export.class_names`` (list or file), else from the val dataset when it
    can be read; None when unknown."""
    names = settings["class_names"]
    if isinstance(names, str):
        text = read_text(names, "export.class_names file", ConfigError,
                         "a text file with one class name per line (line i names class i)")
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if names is not None:
        names = [str(n) for n in names]
        if num_classes is not None and len(names) != num_classes:
            raise ConfigError(f"export.class_names lists {len(names)} names but the model has "
                              f"{num_classes} classes.")
        return names
    dataset_cfg = ((cfg.get("data") or {}).get("val") or {}).get("dataset")
    if not dataset_cfg:
        return None
    try:
        names = getattr(DATASETS.build(dataset_cfg), "class_names", None)
    except DataError as exc:  # e.g. exporting a converted model where the dataset is absent
        get_logger().info("class names unknown (the val dataset cannot be read: %s)", exc)
        return None
    if names is not None and num_classes is not None and len(names) != num_classes:
        get_logger().warning("the val dataset has %d classes but the model %d: class names left "
                             "out (set export.class_names)", len(names), num_classes)
        return None
    return names


def _require_paddle2onnx():
    try:
        import paddle2onnx
    except ImportError:
        raise ConfigError("--format onnx needs the optional package paddle2onnx, which is not "
                          "installed: pip install paddle2onnx (and onnxruntime to check the "
                          "exported model against Paddle).") from None
    return paddle2onnx


class _TanhGelu(nn.Layer):
    """GELU's tanh approximation written out in elementary ops. paddle2onnx (2.1) exports
    ``gelu(approximate=True)`` as the exact erf GELU, which moves a trained Mixer's logits by
    ~3e-4 of their size; these ops it converts as they are."""

    def forward(self, x):
        return 0.5 * x * (1.0 + paddle.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def _onnx_ready(layer: nn.Layer) -> nn.Layer:
    """A copy of ``layer`` with every tanh-approximate nn.GELU replaced by :class:`_TanhGelu`."""
    layer = copy.deepcopy(layer)
    for parent in list(layer.sublayers(include_self=True)):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.GELU) and child._approximate:
                setattr(parent, name, _TanhGelu())
    return layer


def _export_onnx(paddle2onnx, directory: str, layer: nn.Layer, spec, opset: int,
                 shape: Sequence[int]) -> Dict[str, Any]:
    """Write ``layer`` as DIR/inference.onnx; check it against ``layer`` with onnxruntime when
    that is installed."""
    with tempfile.TemporaryDirectory() as tmp:
        paddle.jit.save(_onnx_ready(layer), os.path.join(tmp, PREFIX), input_spec=[spec])
        try:
            # save_file=None returns the bytes: paddle2onnx's own post-passes (which may
            # pip-install packages) only run when it writes the file itself.
            with stdout_discarded():  # paddle2onnx's C++ prints "[Paddle2ONNX] ..." lines
                onnx_bytes = paddle2onnx.export(os.path.join(tmp, program_file(tmp)),
                                                os.path.join(tmp, PREFIX + ".pdiparams"),
                                                save_file=None, opset_version=opset)
        except Exception as exc:  # noqa: BLE001 - paddle2onnx reports failures in many ways
            raise PasslMixerError(f"paddle2onnx could not convert the model (opset {opset}): "
                                  f"{type(exc).__name__}: {exc}") from None
    with open(os.path.join(directory, PREFIX + ".onnx"), "wb") as f:
        f.write(onnx_bytes)
    info = {"file": PREFIX + ".onnx", "opset": opset}
    try:
        import onnxruntime
    except ImportError:
        get_logger().warning("onnxruntime is not installed: the ONNX model was not checked "
                             "against Paddle (pip install onnxruntime)")
        return info
    x = np.random.default_rng(0).standard_normal((2, *shape), dtype=np.float32)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: no coloured warnings about unused initializers
    session = onnxruntime.InferenceSession(onnx_bytes, sess_options=options,
                                           providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    with paddle.no_grad():
        want = layer(paddle.to_tensor(x)).numpy()
    diff = float(np.abs(got - want).max())
    allowed = ONNX_PARITY_RTOL * max(1.0, float(np.abs(want).max()))
    if not diff <= allowed:
        raise PasslMixerError(f"The ONNX model differs from the Paddle model by {diff:.3g} "
                              f"(max abs; allowed {allowed:.3g}) on a random batch.")
    info["onnxruntime_max_abs_diff"] = diff
    return info



def _check_saved(directory: str, model_file: str, params_file: str) -> None:
    """Load what paddle.jit.save wrote: its C++ writer does not report a failed write (a full
    disk, a file-size limit), it leaves the file short. A short file is a WriteError, so the
    export is not swapped in."""
    try:
        check_program_files(directory, model_file, params_file)
    except CheckpointError as exc:
        bad = model_file if f"'{os.path.join(directory, model_file)}'" in str(exc) \
            else params_file
        path = os.path.join(directory, bad)
        raise write_error(path, RuntimeError(f"paddle.jit.save left it incomplete: "
                                             f"{short_write_reason(path)}")) from None


def _check_output_dir(output_dir: str) -> None:
    """Refuse to replace a non-empty directory that is not an export: it may be anything."""
    exists = require_dir(output_dir, "Output", ConfigError,
                         "a directory to export into (a new or empty one, or a previous export)",
                         must_exist=False)
    if exists and os.listdir(output_dir) and \
            not os.path.isfile(os.path.join(output_dir, INFO_FILE)):
        raise ConfigError(f"Output directory '{output_dir}' is not empty and holds no "
                          f"{INFO_FILE}: export replaces the whole directory, so choose an empty "
                          f"or new one (or a previous export directory).")


def export_model(cfg: Dict[str, Any], output_dir: str, weights: Optional[str] = None,
                 softmax: Optional[bool] = None, fmt: str = "paddle", opset: int = 13,
                 model_name: str = "model") -> Dict[str, Any]:
    """Export ``cfg['model']`` with ``weights`` to ``output_dir``; return what ``inference.yml``
    holds. ``weights`` defaults to ``cfg['weights']``; ``softmax`` overrides ``export.softmax``;
    ``fmt='onnx'`` adds ``inference.onnx``. An existing export in ``output_dir`` is replaced
    only once the new one is complete."""
    if fmt not in FORMATS:
        raise ConfigError(f"Unknown export format '{fmt}'; accepted: {', '.join(FORMATS)}.")
    paddle2onnx = _require_paddle2onnx() if fmt == "onnx" else None
    _check_output_dir(output_dir)
    weights = weights or cfg.get("weights")
    settings = export_settings(cfg, softmax)
    model = build_model_with_weights(cfg, weights)
    shape = input_shape(model)
    num_classes = getattr(model, "num_classes", None)
    preprocess = preprocess_config(cfg, settings, shape)
    names = class_names(cfg, settings, num_classes)
    layer = InferenceModel(model, settings["softmax"])
    layer.eval()
    spec = paddle.static.InputSpec([None, *shape], "float32", name="images")

    with atomic_dir(output_dir) as tmp:
        save_program(layer, os.path.join(tmp, PREFIX), [spec])
        _check_saved(tmp, program_file(tmp), PREFIX + ".pdiparams")
        info = {
            "model_name": model_name,
            "model_file": program_file(tmp),
            "params_file": PREFIX + ".pdiparams",
            "paddle_version": paddle.__version__,
            "input": {"name": "images", "shape": [-1, *shape], "dtype": "float32",
                      "layout": "NCHW", "channel_order": "RGB"},
            "output": {"kind": "probabilities" if settings["softmax"] else "logits",
                       "num_classes": num_classes},
            "preprocess": preprocess,
            "class_names": names,
            "weights": os.path.abspath(weights) if weights else None,
            "config": copy.deepcopy(cfg),
        }
        if fmt == "onnx":
            info["onnx"] = _export_onnx(paddle2onnx, tmp, layer, spec, opset, shape)
        # written last: its presence marks a complete export
        with open(os.path.join(tmp, INFO_FILE), "w", encoding="utf-8") as f:
            yaml.safe_dump(info, f, sort_keys=False, default_flow_style=None, allow_unicode=True)
    return info
