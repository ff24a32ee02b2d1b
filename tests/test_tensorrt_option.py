"""tensorrt=True / --tensorrt with what export writes (issue 11, item 13).

Paddle 3.x exports a PIR program (inference.json), which Paddle Inference's
``Config.enable_tensorrt_engine`` does not convert (that path is for .pdmodel programs); Paddle's
documented route for PIR is ``paddle.tensorrt.convert``, present only in builds with TensorRT.
On this CPU-only machine what can run is the refusal: clear, naming the option, and before any
predictor is built. The conversion itself needs a GPU with TensorRT (not tested here)."""
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest
from PIL import Image

from conftest import ROOT, TINY_BACKBONE
from passl_mixer.errors import ConfigError
from passl_mixer.export import export_model
from passl_mixer.inference import Predictor, paddle_config

TINY = {"name": "ImageClassifier", "backbone": dict(TINY_BACKBONE),
        "head": {"name": "LinearClsHead", "num_classes": 10, "in_channels": 32}}
NO_TENSORRT = paddle.inference.get_trt_compile_version() == (0, 0, 0)
pytestmark = pytest.mark.skipif(not NO_TENSORRT, reason="this Paddle build has TensorRT")


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("trt") / "export")
    cfg = {"model": dict(TINY), "data": {"val": {
        "dataset": {"name": "ImageFolder", "root": os.path.join(ROOT, "data", "digits", "val")},
        "transforms": [{"name": "Resize", "size": [16, 16]}, {"name": "Normalize"}]}}}
    info = export_model(cfg, out)  # random weights: only the program format matters here
    return out, info


def test_pir_export_with_tensorrt_is_refused_clearly_without_tensorrt(export_dir):
    model_dir, info = export_dir
    if not info["model_file"].endswith(".json"):
        pytest.skip("this Paddle exports a .pdmodel program")
    with pytest.raises(ConfigError) as exc:
        Predictor(model_dir, device="gpu", tensorrt=True)
    msg = str(exc.value)
    assert "tensorrt" in msg and "PIR" in msg and "paddle.tensorrt.convert" in msg
    assert "without --tensorrt" in msg or "drop tensorrt" in msg


def test_legacy_program_with_tensorrt_is_refused_without_a_tensorrt_build(tmp_path):
    # refused before the (absent) program file is even opened
    with pytest.raises(ConfigError, match="not compiled with TensorRT"):
        paddle_config(str(tmp_path / "inference.pdmodel"), str(tmp_path / "inference.pdiparams"),
                      device="gpu", tensorrt=True, input_shape=[3, 16, 16])


def test_cpu_with_tensorrt_is_still_refused(export_dir):
    with pytest.raises(ConfigError, match="TensorRT runs on GPUs only"):
        Predictor(export_dir[0], device="cpu", tensorrt=True)


def test_predict_cli_tensorrt_is_refused_with_one_message(export_dir, tmp_path):
    """--tensorrt alone means the GPU (the default device is the CPU otherwise): the refusal
    names the option and the reason, exit status 2, nothing on stdout."""
    model_dir, info = export_dir
    image = str(tmp_path / "a.png")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(image)
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools/predict.py"), "--model-dir",
                           model_dir, "--input", image, "--tensorrt"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert "--tensorrt" in proc.stderr and "Traceback" not in proc.stderr
    if info["model_file"].endswith(".json"):
        assert "paddle.tensorrt.convert" in proc.stderr
