"""Every registered backbone family through export: passl_mixer.export -> Paddle Inference
(fp32 equal to dygraph, bf16 within the Mixer's stated bound) and ONNX (onnxruntime equal to
dygraph). Tiny models from conftest.TINY_BACKBONES, 8 images."""
import importlib.util

import numpy as np
import paddle
import pytest

import passl_mixer as pm
from conftest import TINY_BACKBONES
from passl_mixer.checkpoints.weights import save_weights, set_weights
from passl_mixer.export import export_model
from passl_mixer.inference import Predictor, cpu_has_bf16
from test_predict import BF16_REL_BOUND

try:
    import onnxruntime
except ImportError:
    onnxruntime = None
if importlib.util.find_spec("paddle2onnx") is None:
    onnxruntime = None  # no ONNX export without paddle2onnx
# 10 classes and 8 images, as the Mixer's bf16 test (test_predict.py: 10 classes, 11 images):
# the bound is relative to the largest logit, and with 5 classes x 2 images that maximum is so
# small that bf16's rounding reached 1.07% of it for FNet (0.87% for the Mixer); with 10 x 8 the
# measured worst cases were 0.55% (FNet) and 0.36% (Mixer) over 3 weight x 8 input draws.
NUM_CLASSES = 10


def random_weights(model, seed):
    """Every parameter random (the head is zero-initialised otherwise), so logits differ."""
    rng = np.random.default_rng(seed)
    return {k: (rng.standard_normal(v.shape) * 0.2).astype("float32")
            for k, v in model.state_dict().items()}


@pytest.fixture(scope="module", params=sorted(TINY_BACKBONES))
def exported(request, tmp_path_factory):
    """(family, export dir, the dygraph model with the same random weights, inputs)."""
    name = request.param
    backbone = dict(TINY_BACKBONES[name])
    cfg = {"model": {"name": "ImageClassifier", "backbone": backbone,
                     "head": {"name": "LinearClsHead", "num_classes": NUM_CLASSES,
                              "in_channels": backbone["hidden_dim"]}},
           "data": {"val": {"transforms": [{"name": "Resize", "size": [16, 16]},
                                           {"name": "Normalize"}]}}}
    tmp = tmp_path_factory.mktemp(name)
    paddle.seed(0)
    model = pm.build_model(cfg["model"])
    weights = str(tmp / "w.pdparams")
    save_weights(random_weights(model, 0), weights)
    set_weights(model, random_weights(model, 0))
    model.eval()
    out = str(tmp / "export")
    # one export gives both the Paddle program and, where paddle2onnx is installed, the ONNX
    # model (export_model itself checks it against Paddle at 1e-4; the test below at 1e-5)
    info = export_model(cfg, out, weights=weights, fmt="onnx" if onnxruntime else "paddle",
                        model_name=name)
    assert info["input"]["shape"] == [-1, 3, 16, 16]
    assert info["output"] == {"kind": "logits", "num_classes": NUM_CLASSES}
    x = np.random.default_rng(1).standard_normal((8, 3, 16, 16)).astype("float32")
    return name, out, model, x


def dygraph(model, x):
    with paddle.no_grad():
        return model(paddle.to_tensor(x)).numpy()


def test_fp32_predictor_equals_dygraph(exported):
    name, out, model, x = exported
    want = dygraph(model, x)
    got = Predictor(out).run(x)
    assert np.abs(want).max() > 0.1, name  # random weights: logits are not all ~0
    assert np.abs(got - want).max() <= 1e-5, name


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no bf16 instructions "
                                               "(avx512_bf16 / amx_bf16)")
def test_bf16_predictor_within_the_stated_bound(exported):
    name, out, model, x = exported
    predictor = Predictor(out, precision="bf16")
    assert predictor.precision == "bf16"
    want, got = dygraph(model, x), predictor.run(x)
    assert np.abs(got - want).max() <= BF16_REL_BOUND * np.abs(want).max(), name


@pytest.mark.skipif(onnxruntime is None, reason="paddle2onnx or onnxruntime is not installed")
def test_onnx_equals_dygraph(exported):
    name, out, model, x = exported
    session = onnxruntime.InferenceSession(f"{out}/inference.onnx",
                                           providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": x})[0]
    want = dygraph(model, x)
    assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max()), name
