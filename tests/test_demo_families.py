"""The per-family digits demos (configs/demo/<family>_digits.yaml): the same budget as the
Mixer's, a similar size, and each trains through tools/train.py. (Loading and building every
shipped config is tests/test_configs_shipped.py's.)"""
import json
import os

import paddle
import pytest

import passl_mixer as pm
from conftest import ROOT, load_tool, run_in_process
from passl_mixer.models.info import count_parameters

DEMO = os.path.join(ROOT, "configs", "demo")
FAMILIES = {"gmlp": "GMLP", "resmlp": "ResMLP", "fnet": "FNet"}


def demo(family):
    return pm.load_config(os.path.join(DEMO, f"{family}_digits.yaml"))


def parameters(cfg):
    with paddle.LazyGuard():
        return count_parameters(pm.build_model(cfg["model"]))


@pytest.mark.parametrize("family", FAMILIES)
def test_demo_has_the_mixer_budget_and_size(family):
    """Only the backbone (and the output folder, and FNet's no decay on its position embedding)
    differs from mixer_digits.yaml, so the README's comparison table compares families."""
    mixer, cfg = demo("mixer"), demo(family)
    assert cfg["model"]["backbone"]["name"] == FAMILIES[family]
    assert cfg["model"]["head"] == mixer["model"]["head"]
    assert cfg["data"] == mixer["data"]
    assert cfg["lr_scheduler"] == mixer["lr_scheduler"]
    assert {k: v for k, v in cfg["optimizer"].items() if k != "no_weight_decay"} == \
        mixer["optimizer"]
    assert {k: v for k, v in cfg["train"].items() if k != "output_dir"} == \
        {k: v for k, v in mixer["train"].items() if k != "output_dir"}
    assert cfg["train"]["output_dir"] == f"output/{family}_digits"
    # the same input grid and width: 16x16 images, 4x4 patches, 64 channels into the head
    for key in ("patch_size", "img_size", "hidden_dim", "num_blocks", "drop_path_rate"):
        assert cfg["model"]["backbone"][key] == mixer["model"]["backbone"][key], key
    assert abs(parameters(cfg) / parameters(mixer) - 1) < 0.05


@pytest.mark.parametrize("family", FAMILIES)
def test_demo_trains_a_few_steps(family, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)  # the demos name data/digits relative to the repository
    out = tmp_path / family
    status, _, err = run_in_process(load_tool("train"), [
        "-c", os.path.join(DEMO, f"{family}_digits.yaml"), "-o", f"train.output_dir={out}",
        "-o", "train.epochs=1", "-o", "train.max_steps=3"], capsys)
    assert status == 0, err
    log = (out / "train.log").read_text()
    assert f"with {parameters(demo(family)):,} parameters" in log
    assert "1438 training images, 359 validation images" in log
    (record,) = json.loads((out / "metrics.json").read_text())
    assert record["step"] == 3 and record["num_samples"] == 359
    assert (out / "checkpoints" / "latest.pdckpt").is_file()
