"""export_model / tools/export_model.py: files, inference.yml, weights sources, atomic replace,
input checks, ONNX. Tiny models; the exported programs are run by real Paddle Inference in
test_predict.py."""
import copy
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest
import yaml

import passl_mixer as pm
from passl_mixer.checkpoints.weights import load_weights, save_weights, set_weights
from passl_mixer.engine.checkpoint import save_checkpoint
from passl_mixer.errors import CheckpointError, ConfigError
from passl_mixer.export import export_model
from passl_mixer.export_layout import INFO_FILE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS_VAL = os.path.join(ROOT, "data", "digits", "val")
VAL_TRANSFORMS = [{"name": "Resize", "size": [16, 16]}, {"name": "Normalize"}]


def tiny_cfg(tiny_classifier_cfg):
    return {"model": copy.deepcopy(tiny_classifier_cfg),
            "data": {"val": {"dataset": {"name": "ImageFolder", "root": DIGITS_VAL},
                             "transforms": copy.deepcopy(VAL_TRANSFORMS)}}}


def random_weights(cfg, seed=0):
    """A state dict with every parameter random (the head is zero-initialised otherwise)."""
    paddle.seed(seed)
    model = pm.build_model(cfg["model"])
    rng = np.random.default_rng(seed)
    return {k: (rng.standard_normal(v.shape) * 0.2).astype("float32")
            for k, v in model.state_dict().items()}


def read_info(directory):
    with open(os.path.join(directory, INFO_FILE), encoding="utf-8") as f:
        return yaml.safe_load(f)


def test_export_from_a_training_checkpoint_writes_program_and_inference_yml(tmp_path,
                                                                            tiny_classifier_cfg):
    cfg = tiny_cfg(tiny_classifier_cfg)
    ckpt = str(tmp_path / "run.pdckpt")
    save_checkpoint({"model": random_weights(cfg), "epoch": 3, "optimizer": {}}, ckpt)
    out = str(tmp_path / "export")
    info = export_model(cfg, out, weights=ckpt, model_name="tiny")

    # the program format depends on the Paddle version: PIR .json on 3.x, .pdmodel on 2.6
    expected = "inference.json" if paddle.__version__.startswith("3") else "inference.pdmodel"
    assert info["model_file"] == expected
    assert sorted(os.listdir(out)) == sorted([expected, "inference.pdiparams", INFO_FILE])
    on_disk = read_info(out)
    assert on_disk == info
    assert on_disk["model_name"] == "tiny"
    assert on_disk["input"] == {"name": "images", "shape": [-1, 3, 16, 16], "dtype": "float32",
                                "layout": "NCHW", "channel_order": "RGB"}
    assert on_disk["output"] == {"kind": "logits", "num_classes": 10}
    assert on_disk["preprocess"] == VAL_TRANSFORMS
    assert on_disk["class_names"] == [str(i) for i in range(10)]  # the val folders
    assert on_disk["weights"] == os.path.abspath(ckpt)
    assert on_disk["config"] == cfg


def test_export_takes_plain_weights_or_none(tmp_path, tiny_classifier_cfg):
    cfg = tiny_cfg(tiny_classifier_cfg)
    weights = str(tmp_path / "w.pdparams")
    save_weights(random_weights(cfg), weights)
    assert export_model(cfg, str(tmp_path / "a"), weights=weights)["weights"] == \
        os.path.abspath(weights)
    assert export_model(cfg, str(tmp_path / "b"))["weights"] is None  # smoke test: random init


def test_export_section_sets_softmax_class_names_and_preprocess(tmp_path, tiny_classifier_cfg):
    cfg = tiny_cfg(tiny_classifier_cfg)
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"digit {i}" for i in range(10)) + "\n", encoding="utf-8")
    preprocess = [{"name": "ResizeForEval", "img_size": 16, "crop_pct": 0.5}, {"name": "Normalize"}]
    cfg["export"] = {"softmax": True, "class_names": str(names), "preprocess": preprocess}
    info = export_model(cfg, str(tmp_path / "out"))
    assert info["output"]["kind"] == "probabilities"
    assert info["class_names"][3] == "digit 3"
    assert info["preprocess"] == preprocess
    assert export_model(cfg, str(tmp_path / "out2"), softmax=False)["output"]["kind"] == "logits"


@pytest.mark.parametrize("change, message", [
    (lambda c: c["data"]["val"]["transforms"].insert(0, {"name": "RandomHorizontalFlip"}),
     "deterministic"),
    (lambda c: c["data"]["val"]["transforms"].__setitem__(0, {"name": "Resize", "size": [20, 20]}),
     "but the model takes [3, 16, 16]"),
    # a short-side Resize keeps the aspect ratio: a non-square image would not fit the model
    (lambda c: c["data"]["val"]["transforms"].__setitem__(0, {"name": "Resize", "size": 16}),
     "data.val.transforms does not end in a fixed image size: from Resize"),
    (lambda c: c["data"]["val"].__setitem__("transforms", [{"name": "Normalize"}]),
     "data.val.transforms sets no image size"),
    (lambda c: c["data"]["val"].pop("transforms"), "data.val.transforms"),
    (lambda c: c.__setitem__("export", {"class_names": ["a", "b"]}),
     "2 names but the model has 10"),
    (lambda c: c.__setitem__("export", {"softmaxx": True}), "did you mean 'softmax'"),
])
def test_export_rejects_bad_settings_before_writing(tmp_path, tiny_classifier_cfg, change, message):
    cfg = tiny_cfg(tiny_classifier_cfg)
    change(cfg)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        export_model(cfg, str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out")


def test_weights_that_do_not_fit_are_a_clear_error(tmp_path, tiny_classifier_cfg):
    cfg = tiny_cfg(tiny_classifier_cfg)
    other = copy.deepcopy(cfg)
    other["model"]["head"]["num_classes"] = 5
    weights = str(tmp_path / "w.pdparams")
    save_weights(random_weights(other), weights)
    with pytest.raises(CheckpointError, match="head.fc.weight: model \\[32, 10\\] vs"):
        export_model(cfg, str(tmp_path / "out"), weights=weights)


def test_a_failed_export_leaves_the_previous_one_intact(tmp_path, tiny_classifier_cfg,
                                                        monkeypatch):
    cfg = tiny_cfg(tiny_classifier_cfg)
    out = str(tmp_path / "out")
    first = export_model(cfg, out, weights=None, model_name="first")
    before = {f: open(os.path.join(out, f), "rb").read() for f in os.listdir(out)}

    def crash(*args, **kwargs):  # fail at the very last step, after the program is written
        raise OSError("disk full")
    monkeypatch.setattr("passl_mixer.export.yaml.safe_dump", crash)
    with pytest.raises(OSError, match="disk full"):
        export_model(cfg, out, model_name="second")
    assert {f: open(os.path.join(out, f), "rb").read() for f in os.listdir(out)} == before
    assert read_info(out)["model_name"] == first["model_name"]
    assert [f for f in os.listdir(tmp_path) if f.startswith(".")] == []  # no temp dirs left
    monkeypatch.undo()
    assert export_model(cfg, out, model_name="third")["model_name"] == "third"
    assert read_info(out)["model_name"] == "third"


def test_export_refuses_a_folder_that_is_not_an_export(tmp_path, tiny_classifier_cfg):
    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(ConfigError, match="not empty and holds no inference.yml"):
        export_model(tiny_cfg(tiny_classifier_cfg), str(tmp_path))
    assert os.listdir(tmp_path) == ["notes.txt"]


def write_tiny_yaml(tmp_path, tiny_classifier_cfg):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_cfg(tiny_classifier_cfg)), encoding="utf-8")
    return str(path)


def run_tool(args, env=None):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def test_onnx_export_matches_paddle(tmp_path, tiny_classifier_cfg):
    pytest.importorskip("paddle2onnx")
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    cfg = tiny_cfg(tiny_classifier_cfg)
    weights = str(tmp_path / "w.pdparams")
    save_weights({k: v * 5 for k, v in random_weights(cfg).items()}, weights)  # large activations
    out = str(tmp_path / "out")
    info = export_model(cfg, out, weights=weights, fmt="onnx")
    assert info["onnx"]["file"] == "inference.onnx"
    assert "inference.json" in os.listdir(out) or "inference.pdmodel" in os.listdir(out)

    onnx_file = os.path.join(out, "inference.onnx")
    # paddle2onnx turns gelu(approximate=True) into the exact erf GELU; export avoids that
    assert "Erf" not in {node.op_type for node in onnx.load(onnx_file).graph.node}
    model = pm.build_model(cfg["model"])
    set_weights(model, load_weights(weights))
    model.eval()
    x = np.random.default_rng(1).standard_normal((7, 3, 16, 16), dtype=np.float32)
    got = ort.InferenceSession(onnx_file, providers=["CPUExecutionProvider"]).run(
        None, {"images": x})[0]
    want = model(paddle.to_tensor(x)).numpy()
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_onnx_without_paddle2onnx_says_how_to_install_it(tmp_path, tiny_classifier_cfg):
    # Hide paddle2onnx from a child process: a package of that name earlier on sys.path that
    # fails to import, exactly as a missing one does.
    fake = tmp_path / "hide" / "paddle2onnx"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named paddle2onnx')\n")
    out = tmp_path / "out"
    proc = run_tool(["tools/export_model.py", "-c", write_tiny_yaml(tmp_path, tiny_classifier_cfg),
                     "--output", str(out), "--format", "onnx"],
                    env={"PYTHONPATH": str(tmp_path / "hide")})
    assert proc.returncode == 2, proc.stderr
    message = " ".join(proc.stderr.split())  # the tool wraps its message at 100 columns
    assert "needs the optional package paddle2onnx, which is not installed: pip install " \
        "paddle2onnx" in message
    assert "Traceback" not in message
    assert not out.exists()


def test_a_batchnorm_neck_exports_and_predicts_as_dygraph(tmp_path, tiny_classifier_cfg):
    """A linear probe's BatchNorm neck is exported as the affine map it is in evaluation mode
    (models.layers.FrozenBatchNorm): Paddle 3.3.1's oneDNN batch_norm kernel crashed the
    predictor (a segmentation fault) on its [B, C] features."""
    cfg = tiny_cfg(tiny_classifier_cfg)
    width = cfg["model"]["head"]["in_channels"]
    cfg["model"]["neck"] = {"name": "BatchNormNeck", "in_channels": width}
    paddle.seed(3)
    model = pm.build_model(cfg["model"])
    bn = model.neck.bn
    bn._mean.set_value(paddle.randn([width]))                 # running statistics that matter
    bn._variance.set_value(paddle.rand([width]) + 0.5)
    model.head.fc.weight.set_value(paddle.randn(model.head.fc.weight.shape))
    save_weights(model.state_dict(), str(tmp_path / "w.pdparams"))
    export_model(cfg, str(tmp_path / "out"), weights=str(tmp_path / "w.pdparams"))
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype("float32")
    model.eval()
    with paddle.no_grad():
        expected = model(paddle.to_tensor(x)).numpy()
    got = pm.Predictor(str(tmp_path / "out")).run(x)
    assert np.abs(expected).max() > 0.5
    assert np.abs(got - expected).max() <= 1e-5 * max(1.0, np.abs(expected).max())
