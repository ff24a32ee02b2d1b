"""Every shipped experiment config loads, passes validation and builds its model."""
import glob
import io
import math
import os

import paddle
import pytest

import passl_mixer as pm
from conftest import ROOT
from passl_mixer.logs import ProgressBar
from passl_mixer.engine.trainer import validate_config

CONFIGS = sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True)
                 if "_base_" not in p)


def test_all_variant_configs_exist():
    names = {os.path.basename(p) for p in CONFIGS}
    for arch in ("s32", "s16", "b32", "b16", "l32", "l16", "h14"):
        assert f"mixer_{arch}_224.yaml" in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, ROOT))
def test_config_loads_and_builds(path):
    cfg = pm.load_config(path)
    if "data" in cfg:  # experiment configs (probe/export configs may hold only a model)
        validate_config(cfg)
    with paddle.LazyGuard():  # shapes only, no memory for the weights
        model = pm.build_model(cfg["model"])
    assert sum(math.prod(p.shape) for p in model.parameters()) > 0


def test_variant_config_matches_its_arch():
    cfg = pm.load_config(os.path.join(ROOT, "configs/mlp_mixer/mixer_l16_224.yaml"))
    assert cfg["model"]["backbone"]["arch"] == "l16"
    assert cfg["model"]["head"]["in_channels"] == pm.ARCHS["l16"]["hidden_dim"]
    assert cfg["model"]["backbone"]["use_recompute"] is True


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_only_on_a_terminal():
    tty, pipe = Terminal(), io.StringIO()
    for stream in (tty, pipe):
        bar = ProgressBar(10, desc="epoch 1/2", stream=stream)
        bar.update(5, "loss 0.5")
        bar.close()
    assert "epoch 1/2 [############............] 5/10 loss 0.5 eta" in tty.getvalue()
    assert pipe.getvalue() == ""
