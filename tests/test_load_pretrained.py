"""load_pretrained(): sources, head handling, error messages, and model.pretrained in training."""
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

import passl_mixer as pm
from passl_mixer.checkpoints import convert_checkpoint, load_pretrained
from passl_mixer.checkpoints.weights import save_weights
from passl_mixer.engine.checkpoint import save_checkpoint
from passl_mixer.errors import CheckpointError
from test_checkpoints_utils import (mixer_log, official_params, timm_state,  # noqa: F401
                                    tiny_classifier_cfg, write_npz)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def source():
    """A tiny classifier with non-zero weights everywhere, standing in for a checkpoint."""
    paddle.seed(1)
    model = pm.build_model(tiny_classifier_cfg(num_classes=5))
    model.head.fc.weight.set_value(np.random.default_rng(0).normal(0, 1, (16, 5)).astype("float32"))
    model.head.fc.bias.set_value(np.full(5, 0.3, "float32"))
    return model


def backbone_equal(model, reference):
    theirs = reference.backbone.state_dict()
    return all(np.array_equal(v.numpy(), theirs[k].numpy())
               for k, v in model.backbone.state_dict().items())


def test_other_class_count_reinitialises_the_head_to_zero(tmp_path, source, mixer_log):
    path = str(tmp_path / "src.pdparams")
    save_weights(source.state_dict(), path)
    model = pm.build_model(tiny_classifier_cfg(num_classes=10))
    model.head.fc.weight.set_value(np.ones((16, 10), "float32"))  # must not survive
    summary = load_pretrained(model, path)
    assert summary["head"] == "reinitialised"
    assert backbone_equal(model, source)
    assert not model.head.fc.weight.numpy().any() and not model.head.fc.bias.numpy().any()
    assert "5 classes, the model's 10" in mixer_log.text()
    assert "re-initialised to zero" in mixer_log.text()

    with pytest.raises(CheckpointError, match="strict_head"):
        load_pretrained(model, path, strict_head=True)


def test_same_class_count_loads_the_head(tmp_path, source):
    path = str(tmp_path / "src.safetensors")
    save_weights(source.state_dict(), path)
    model = pm.build_model(tiny_classifier_cfg(num_classes=5))
    summary = load_pretrained(model, path)
    assert summary["head"] == "loaded" and summary["layout"] == "passl_mixer"
    np.testing.assert_array_equal(model.head.fc.weight.numpy(), source.head.fc.weight.numpy())


def test_missing_unexpected_and_mis_shaped_keys_are_named(tmp_path, source):
    state = timm_state(source)
    del state["blocks.1.norm2.bias"]
    state["blocks.0.extra.weight"] = np.zeros(3, "float32")
    path = write_npz(tmp_path / "broken.npz", state)
    model = pm.build_model(tiny_classifier_cfg(num_classes=5))
    with pytest.raises(CheckpointError) as info:
        load_pretrained(model, path)
    assert "backbone.blocks.1.norm2.bias" in str(info.value)
    assert "backbone.blocks.0.extra.weight" in str(info.value)

    state = timm_state(source)
    state["norm.weight"] = np.ones(17, "float32")
    path = write_npz(tmp_path / "shape.npz", state)
    with pytest.raises(CheckpointError, match=r"backbone\.norm\.weight: model \[16\] vs .* \[17\]"):
        load_pretrained(model, path)


@pytest.mark.parametrize("prefix,other", [("base_encoder.backbone.", "momentum_encoder.backbone."),
                                          ("online.backbone.", "target.backbone.")])
def test_ssl_checkpoints_give_their_backbone(tmp_path, source, mixer_log, prefix, other):
    backbone = {k: v for k, v in source.backbone.state_dict().items()}
    state = {prefix + k: v for k, v in backbone.items()}
    state.update({other + k: paddle.zeros_like(v) for k, v in backbone.items()})
    state["predictor.fc.weight"] = paddle.zeros([4, 4])
    path = str(tmp_path / "ssl.pdckpt")
    save_checkpoint({"model": state, "epoch": 3}, path)  # a training checkpoint
    model = pm.build_model(tiny_classifier_cfg(num_classes=10))
    summary = load_pretrained(model, path)
    assert backbone_equal(model, source)
    assert summary["ignored"] == len(backbone) + 1 and summary["head"] == "reinitialised"
    assert f"ignored {len(backbone) + 1} other keys [{other}" in mixer_log.text()


def probe_cfg(num_classes=10):
    """A linear probe: frozen backbone, BatchNorm neck, linear head."""
    return dict(tiny_classifier_cfg(num_classes=num_classes), freeze_backbone=True,
                neck=dict(name="BatchNormNeck", in_channels=16))


def test_a_checkpoint_without_neck_leaves_the_models_neck_as_built(tmp_path, source, mixer_log):
    """A backbone-only checkpoint (published or SSL) loads into a probe with a BatchNorm neck;
    the neck keeps its initial statistics and then normalises the frozen features."""
    path = str(tmp_path / "src.pdparams")
    save_weights(source.state_dict(), path)
    model = pm.build_model(probe_cfg())
    summary = load_pretrained(model, path)
    assert summary["head"] == "reinitialised" and backbone_equal(model, source)
    assert "model's BatchNormNeck keeps its initialisation" in mixer_log.text()
    np.testing.assert_array_equal(model.neck.bn._mean.numpy(), np.zeros(16, "float32"))
    np.testing.assert_array_equal(model.neck.bn._variance.numpy(), np.ones(16, "float32"))
    # no scale or shift (Paddle keeps the running statistics as stop_gradient parameters)
    assert all(p.stop_gradient for p in model.neck.parameters())

    model.train()
    x = paddle.randn([32, 3, 16, 16])
    feats = model.extract_features(x).numpy()
    np.testing.assert_allclose(feats.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(feats.std(0), 1, atol=1e-2)
    assert model.neck.bn._mean.numpy().any()  # running statistics follow the features


def test_a_checkpoint_with_a_neck_must_give_all_of_it(tmp_path):
    paddle.seed(2)
    trained = pm.build_model(probe_cfg())
    trained.neck.bn._mean.set_value(np.full(16, 0.5, "float32"))
    state = {k: v.numpy() for k, v in trained.state_dict().items()}
    path = str(tmp_path / "probe.pdparams")
    save_weights(state, path)
    model = pm.build_model(probe_cfg())
    assert load_pretrained(model, path)["head"] == "loaded"
    np.testing.assert_array_equal(model.neck.bn._mean.numpy(), np.full(16, 0.5, "float32"))

    del state["neck.bn._variance"]
    save_weights(state, path)
    with pytest.raises(CheckpointError, match=r"neck\.bn\._variance"):
        load_pretrained(model, path)


def test_bare_backbone_target(tmp_path):
    rng = np.random.default_rng(0)
    path = write_npz(tmp_path / "official.npz", official_params(rng))
    cfg = tiny_classifier_cfg()["backbone"]
    backbone = pm.build_backbone(cfg)
    assert load_pretrained(backbone, path)["head"] == "none"
    expected = official_params(np.random.default_rng(0))["MixerBlock_1/token_mixing/Dense_0/kernel"]
    np.testing.assert_array_equal(backbone.blocks[1].mlp_tokens.fc1.weight.numpy(), expected)


def test_img_size_is_checked_against_the_checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    path = write_npz(tmp_path / "official.npz", official_params(rng))
    model = pm.build_model(tiny_classifier_cfg())
    load_pretrained(model, path, img_size=16)
    with pytest.raises(CheckpointError, match="img_size 32x32"):
        load_pretrained(model, path, img_size=32)


def test_model_pretrained_in_a_training_config(tmp_path):
    """tools/train.py honours model.pretrained: the demo Mixer from a converted checkpoint with
    a 1000-class head; the log reports the head's re-initialisation."""
    rng = np.random.default_rng(0)
    dims = dict(patch_size=4, hidden_dim=64, num_blocks=4, tokens_mlp_dim=32,
                channels_mlp_dim=128)  # configs/demo/mixer_digits.yaml
    npz = write_npz(tmp_path / "demo.npz", official_params(rng, num_classes=1000, dims=dims))
    converted = convert_checkpoint(npz, str(tmp_path / "converted"))
    out = tmp_path / "run"
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train.py"),
           "-c", os.path.join(ROOT, "configs", "demo", "mixer_digits.yaml"),
           "-o", f"train.output_dir={out}", "-o", "train.max_steps=2", "-o", "train.epochs=1",
           "-o", f"model.pretrained={converted['weights']}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    log = (out / "train.log").read_text()
    assert "1000 classes, the model's 10: checkpoint head dropped" in log
    assert f"pretrained: loaded {converted['weights']}" in log
