"""tools/convert_checkpoint.py and convert_checkpoint(): layouts, formats, and bad inputs."""
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

import passl_mixer as pm
from conftest import load_tool
from passl_mixer.checkpoints import convert_checkpoint
from passl_mixer.cli import run
from passl_mixer.checkpoints.weights import load_weights, set_weights
from passl_mixer.errors import CheckpointError
from test_checkpoints_utils import (official_params, timm_state, tiny_classifier_cfg,
                                    write_npz)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "convert_checkpoint.py")


def load_converted(result):
    """Build the model from the written model.yaml and load the weights strictly."""
    model = pm.build_model(pm.load_config(result["config"])["model"])
    set_weights(model, load_weights(result["weights"]), source=result["weights"])
    return model


def assert_same_weights(model, reference):
    for k, v in reference.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[k].numpy(), v.numpy(), err_msg=k)


@pytest.fixture
def trained_like():
    """A tiny classifier with a non-zero head, standing in for a published checkpoint."""
    paddle.seed(0)
    model = pm.build_model(tiny_classifier_cfg(num_classes=5))
    model.head.fc.weight.set_value(np.random.default_rng(0).normal(0, 1, (16, 5)).astype("float32"))
    return model


def test_timm_pdparams_round_trip(tmp_path, trained_like):
    src = str(tmp_path / "timm.pdparams")
    paddle.save({k: paddle.to_tensor(v) for k, v in timm_state(trained_like).items()}, src)
    result = convert_checkpoint(src, str(tmp_path / "out"))
    assert result["layout"] == "timm"
    assert result["model"]["backbone"]["gelu"] == "exact"  # what timm computes
    assert_same_weights(load_converted(result), trained_like)


def test_timm_npz_in_pytorch_layout_round_trip(tmp_path, trained_like):
    """A PyTorch state dict saved with np.savez: Linear weights are [out, in]."""
    state = {k: (v.T if v.ndim == 2 else v) for k, v in timm_state(trained_like).items()}
    result = convert_checkpoint(write_npz(tmp_path / "torch.npz", state), str(tmp_path / "out"),
                                format="safetensors")
    assert result["weights"].endswith("model.safetensors")
    assert any("PyTorch layout" in note for note in result["notes"])
    assert_same_weights(load_converted(result), trained_like)


def test_passl_v1_layout(tmp_path, trained_like):
    state = {k.replace("head.fc.", "head.fc_cls."): v for k, v in trained_like.state_dict().items()}
    src = str(tmp_path / "passl.pdparams")
    paddle.save(state, src)
    result = convert_checkpoint(src, str(tmp_path / "out"), gelu="tanh")
    assert result["layout"] == "passl-v1" and result["model"]["backbone"]["gelu"] == "tanh"
    assert_same_weights(load_converted(result), trained_like)


def test_official_arch_is_named(tmp_path):
    rng = np.random.default_rng(0)
    result = convert_checkpoint(write_npz(tmp_path / "m.npz", official_params(rng)),
                                str(tmp_path / "out"))
    backbone = result["model"]["backbone"]
    assert backbone["patch_size"] == 4 and backbone["num_blocks"] == 2 and "arch" not in backbone
    # a B/16-shaped config is named by its arch
    from passl_mixer.checkpoints.convert import model_config
    from passl_mixer.checkpoints.reader import Checkpoint, OFFICIAL
    shapes = {"backbone.stem.proj.weight": (768, 3, 16, 16),
              "backbone.blocks.0.mlp_tokens.fc1.weight": (196, 384),
              "backbone.blocks.0.mlp_channels.fc1.weight": (768, 3072)}
    shapes.update({f"backbone.blocks.{i}.norm1.weight": (768,) for i in range(12)})
    fake = Checkpoint("b16", OFFICIAL, {k: np.empty(s, np.float32) for k, s in shapes.items()})
    cfg = model_config(fake)
    assert cfg["backbone"]["arch"] == "b16" and cfg["backbone"]["img_size"] == 224
    assert cfg["head"]["num_classes"] == 0


def snapshot(directory):
    return {f: open(os.path.join(directory, f), "rb").read() for f in os.listdir(directory)}


def test_truncated_and_random_files_leave_the_output_as_it_was(tmp_path):
    rng = np.random.default_rng(0)
    good = write_npz(tmp_path / "good.npz", official_params(rng))
    data = open(good, "rb").read()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[:len(data) // 2])
    noise = tmp_path / "noise.pdparams"
    noise.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())

    fresh = tmp_path / "fresh"
    existing = str(tmp_path / "existing")
    convert_checkpoint(good, existing)
    before = snapshot(existing)
    for bad in (truncated, noise):
        for out in (str(fresh), existing):
            with pytest.raises(CheckpointError, match="truncated|corrupt|not a"):
                convert_checkpoint(str(bad), out)
    assert not fresh.exists()
    assert snapshot(existing) == before
    assert sorted(os.listdir(tmp_path)) == ["existing", "good.npz", "noise.pdparams",
                                            "truncated.npz"]  # no temp dirs left behind


def test_foreign_layouts_and_prefixed_keys_are_refused_with_the_keys_found(tmp_path):
    rng = np.random.default_rng(0)
    params = official_params(rng)
    prefixed = write_npz(tmp_path / "prefixed.npz", {f"params/{k}": v for k, v in params.items()})
    with pytest.raises(CheckpointError, match="params/stem/kernel"):
        convert_checkpoint(prefixed, str(tmp_path / "out"))
    extra = write_npz(tmp_path / "extra.npz", {**params, "pre_logits/kernel": np.zeros((16, 16))})
    with pytest.raises(CheckpointError, match="pre_logits/kernel"):
        convert_checkpoint(extra, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_output_dir_with_other_files_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    src = write_npz(tmp_path / "m.npz", official_params(rng))
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="notes.txt"):
        convert_checkpoint(src, str(out))
    assert (out / "notes.txt").read_text() == "keep me"


def test_non_square_grid_needs_img_size(tmp_path):
    rng = np.random.default_rng(0)
    src = write_npz(tmp_path / "wide.npz", official_params(rng, img_size=(8, 16)))
    with pytest.raises(CheckpointError, match="img_size"):
        convert_checkpoint(src, str(tmp_path / "out"))


def run_tool(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_tool_end_to_end(tmp_path):
    rng = np.random.default_rng(0)
    src = write_npz(tmp_path / "Mixer-T.npz", official_params(rng, num_classes=5))
    out = tmp_path / "converted"
    proc = run_tool("--src", src, "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(out)) == ["model.pdparams", "model.yaml"]
    load_converted({"config": str(out / "model.yaml"), "weights": str(out / "model.pdparams")})



def test_tool_reports_a_bad_file_in_one_paragraph(tmp_path, capsys):
    tool = load_tool("convert_checkpoint")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(SystemExit) as exit_info:
        run(tool.main, ["--src", str(bad), "--output", str(tmp_path / "x")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Cannot read") and "Traceback" not in err
    assert not (tmp_path / "x").exists()
