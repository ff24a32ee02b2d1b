"""End-to-end runs of tools/train.py and tools/eval.py on tiny data (CPU)."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from conftest import (ROOT, final_weights, make_image_folder, run_tool, tiny_train_config,
                      write_yaml)
from passl_mixer.engine.checkpoint import load_checkpoint


def test_train_then_eval_tool(tiny_data, tmp_path):
    out = str(tmp_path / "run")
    cfg = write_yaml(tmp_path / "c.yaml", tiny_train_config(tiny_data, out, epochs=3))
    proc = run_tool(["tools/train.py", "-c", cfg])
    log = proc.stdout
    assert "global batch 16 = 16 per device x 1 process(es) x 1 accumulation step(s)" in log
    assert "img/s" in log and "eta" in log and "lr" in log
    assert "checkpoints:" in log and "VisualDL logs:" in log
    history = json.load(open(os.path.join(out, "metrics.json")))
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["top1"] > 60  # learnable toy data
    assert history[-1]["num_samples"] == 24
    for f in ("config.yaml", "train.log", "checkpoints/latest.pdckpt", "checkpoints/best.pdckpt",
              "checkpoints/epoch_0003.pdckpt"):
        assert os.path.exists(os.path.join(out, f)), f
    assert any(name.startswith("vdlrecords") for name in os.listdir(os.path.join(out, "vdl")))
    state = load_checkpoint(os.path.join(out, "checkpoints", "latest.pdckpt"))
    assert {"model", "optimizer", "lr_scheduler", "ema", "scaler", "epoch", "global_step", "rng",
            "config"} <= set(state)
    assert state["epoch"] == 3 and state["global_step"] == 18
    assert state["config"]["train"]["epochs"] == 3

    eval_out = str(tmp_path / "eval")
    proc = run_tool(["tools/eval.py", "-c", cfg, "--output", eval_out,
                     "-o", f"weights={out}/checkpoints/latest.pdckpt"])
    metrics = json.load(open(os.path.join(eval_out, "eval.json")))
    assert metrics["top1"] == pytest.approx(history[-1]["top1"])
    assert metrics["loss"] == pytest.approx(history[-1]["loss"], rel=1e-5)


def test_demo_config_trains_a_few_steps(tmp_path):
    out = str(tmp_path / "demo")
    proc = run_tool(["tools/train.py", "-c", "configs/demo/mixer_digits.yaml",
                     "-o", f"train.output_dir={out}", "-o", "train.max_steps=3",
                     "-o", "train.log_interval=1"], cwd=ROOT)
    assert "1438 training images, 359 validation images" in proc.stdout
    assert "step 3/" in proc.stdout
    assert os.path.exists(os.path.join(out, "checkpoints", "latest.pdckpt"))


@pytest.mark.parametrize("override,expect", [
    ("train.epoch=3", "unknown key 'train.epoch' (did you mean 'epochs'?)"),
    ("trian.epochs=3", "unknown key 'trian' (did you mean 'train'?)"),
    ("model.backbone.hiden_dim=8", "model.backbone.hiden_dim (did you mean 'hidden_dim'?)"),
    ("data.train.dataset.root=/no/such/dir", "/no/such/dir"),
])
def test_bad_config_is_one_clear_error(tiny_data, tmp_path, override, expect):
    out = tmp_path / "run"
    cfg = write_yaml(tmp_path / "c.yaml", tiny_train_config(tiny_data, str(out)))
    proc = run_tool(["tools/train.py", "-c", cfg, "-o", override], check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ")
    assert expect in " ".join(proc.stderr.split())
    assert not (out / "checkpoints").exists()
    assert "model:" not in proc.stdout  # the data is checked before the model is built


def test_corrupt_and_grayscale_images_are_handled(tmp_path):
    root = make_image_folder(str(tmp_path / "data"), per_class_train=8, per_class_val=2)
    bad = os.path.join(root, "train", "class_0", "broken.jpg")
    with open(bad, "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    Image.fromarray(np.full((16, 16), 128, np.uint8), mode="L").save(
        os.path.join(root, "train", "class_1", "gray.png"))
    out = str(tmp_path / "run")
    cfg = tiny_train_config(root, out, epochs=1)
    cfg["data"]["train"]["batch_size"] = 11  # 33 images -> 3 batches, the broken one included
    proc = run_tool(["tools/train.py", "-c", write_yaml(tmp_path / "c.yaml", cfg)])
    assert "broken.jpg" in proc.stdout + proc.stderr
    assert os.path.exists(os.path.join(out, "checkpoints", "latest.pdckpt"))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path):
    out = str(tmp_path / "run")
    cfg = write_yaml(tmp_path / "c.yaml", tiny_train_config(tiny_data, out, epochs=1))
    run_tool(["tools/train.py", "-c", cfg])
    before = final_weights(out)
    proc = run_tool(["tools/train.py", "-c", cfg, "--resume", "auto", "-o", "train.epochs=3",
                     "-o", "optimizer.lr=1.0e+30", "-o", "optimizer.grad_clip=null",
                     "-o", "lr_scheduler=null"], check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    msg = " ".join(proc.stderr.split())
    assert "The loss became nan" in msg or "The loss became inf" in msg
    assert "epoch 2" in msg and "latest.pdckpt" in msg
    after = final_weights(out)
    assert all(np.array_equal(before[k], after[k]) for k in before)
