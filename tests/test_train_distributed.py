"""Data parallel on CPU (gloo): 2 processes give the same weights and metrics as 1."""
import json
import os

import pytest

from conftest import (final_weights, max_weight_diff, run_tool, tiny_train_config,
                      train_one_and_two_processes, write_yaml)


def test_two_processes_equal_one_process(tiny_data, tmp_path):
    """Same global batch (16 = 16 x 1 = 8 x 2), same seed; mixup off, no dropout.

    SGD, not Adam: the token-mixing output bias has an exactly-zero true gradient (the next
    LayerNorm removes a per-token constant), and Adam would divide its rounding noise by its
    own tiny second moment, turning float noise into lr-sized steps that differ between runs.
    """
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    cfgs = []
    for out, batch in ((one, 16), (two, 8)):
        cfg = tiny_train_config(tiny_data, out, epochs=2)
        cfg["optimizer"] = {"name": "SGD", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4,
                            "grad_clip": 1.0}
        cfg["data"]["train"]["batch_size"] = batch
        cfgs.append(cfg)
    cfg1, cfg2 = cfgs
    log = train_one_and_two_processes(tmp_path, cfg1, cfg2)
    assert "global batch 16 = 8 per device x 2 process(es)" in log
    assert max_weight_diff(final_weights(one), final_weights(two)) <= 1e-5
    m1 = json.load(open(os.path.join(one, "metrics.json")))
    m2 = json.load(open(os.path.join(two, "metrics.json")))
    assert [m["num_samples"] for m in m2] == [24, 24]
    for a, b in zip(m1, m2):
        assert a["top1"] == pytest.approx(b["top1"]) and a["top5"] == pytest.approx(b["top5"])
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-4)
    # only rank 0 writes: one checkpoint set, no files from rank 1
    assert sorted(os.listdir(os.path.join(two, "checkpoints"))) == \
        ["best.pdckpt", "epoch_0001.pdckpt", "epoch_0002.pdckpt", "latest.pdckpt"]


def test_eval_is_the_same_with_one_and_two_processes(tiny_data, tmp_path):
    train_out = str(tmp_path / "train")
    cfg = tiny_train_config(tiny_data, train_out, epochs=1)
    cfg["data"]["val"]["batch_size"] = 7  # 24 images: 2 ranks x 7 leaves a padded last batch
    path = write_yaml(tmp_path / "c.yaml", cfg)
    run_tool(["tools/train.py", "-c", path])
    results = []
    for procs in (0, 2):
        out = str(tmp_path / f"eval{procs}")
        run_tool(["tools/eval.py", "-c", path, "--output", out,
                  "-o", f"weights={train_out}/checkpoints/latest.pdckpt"],
                 cwd=str(tmp_path), launch_procs=procs)
        results.append(json.load(open(os.path.join(out, "eval.json"))))
    a, b = results
    assert a["num_samples"] == b["num_samples"] == 24
    assert a["top1"] == pytest.approx(b["top1"]) and a["top5"] == pytest.approx(b["top5"])
    assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
