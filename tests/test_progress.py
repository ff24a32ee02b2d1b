"""Progress in the log off a terminal: a time-based line besides the step interval, step
counts and ETA against train.max_steps, a warning for a warmup longer than the run, the end of
an SSL run naming only checkpoints that exist, and tools/ssl_demo.py echoing progress."""
import os
import re

from conftest import TINY_BACKBONE, load_tool, tiny_train_config, write_yaml

from passl_mixer.engine import Trainer

STEP_LINE = re.compile(r"epoch (\d+)/(\d+) step (\d+)/(\d+) .* eta (\d+):(\d\d):(\d\d)")


def train_log(cfg):
    Trainer(cfg, config_name="t").train()
    with open(os.path.join(cfg["train"]["output_dir"], "train.log")) as f:
        return f.read()


def test_log_seconds_writes_a_line_between_log_intervals(tmp_path, tiny_data):
    # 6 steps per epoch; log_interval 1000 alone would log only the run's last step
    cfg = tiny_train_config(tiny_data, str(tmp_path / "run"), epochs=1, log_interval=1000,
                            log_seconds=1e-6)
    steps = [int(m.group(3)) for m in STEP_LINE.finditer(train_log(cfg))]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_log_seconds_zero_logs_by_steps_only(tmp_path, tiny_data):
    cfg = tiny_train_config(tiny_data, str(tmp_path / "run"), epochs=1, log_interval=4,
                            log_seconds=0)
    assert [int(m.group(3)) for m in STEP_LINE.finditer(train_log(cfg))] == [4, 6]


def test_max_steps_sets_the_step_count_epochs_and_eta(tmp_path, tiny_data):
    # 3 epochs of 6 steps = 18, but max_steps stops after 5 (inside the first epoch)
    cfg = tiny_train_config(tiny_data, str(tmp_path / "run"), epochs=3, max_steps=5,
                            log_interval=1, log_seconds=0)
    log = train_log(cfg)
    lines = list(STEP_LINE.finditer(log))
    assert [(int(m.group(1)), int(m.group(2)), int(m.group(3)), int(m.group(4)))
            for m in lines] == [(1, 1, k, 5) for k in range(1, 6)]
    assert lines[-1].group(5, 6, 7) == ("0", "00", "00")  # nothing left at the last step
    assert "train.max_steps stops the run after 5 steps" in log
    assert "done: 5 steps" in log


def test_warmup_longer_than_the_run_warns(tmp_path, tiny_data):
    cfg = tiny_train_config(tiny_data, str(tmp_path / "run"), epochs=1)
    cfg["lr_scheduler"] = {"name": "Cosine", "warmup_epochs": 3}  # 18 steps; the run has 6
    log = train_log(cfg)
    assert "lr_scheduler.warmup_epochs 3 (18 steps) is longer than the run (6 steps)" in log


def test_warmup_longer_than_max_steps_warns(tmp_path, tiny_data):
    cfg = tiny_train_config(tiny_data, str(tmp_path / "run"), epochs=2, max_steps=3)
    cfg["lr_scheduler"] = {"name": "Cosine", "warmup_steps": 5}  # within 12 steps, not 3
    log = train_log(cfg)
    assert "lr warmup (5 steps) is longer than the run (train.max_steps 3)" in log
    assert "is longer than the run (12 steps)" not in log


def test_warmup_within_the_run_does_not_warn(tmp_path, tiny_data):
    log = train_log(tiny_train_config(tiny_data, str(tmp_path / "run"), epochs=1))
    assert "longer than the run" not in log


def test_ssl_run_end_names_only_existing_checkpoints(tmp_path, tiny_data):
    views = [[{"name": "RandomResizedCrop", "size": 16, "scale": [0.3, 1.0]},
              {"name": "Normalize"}]] * 2
    neck = dict(name="MLPNeck", in_channels=32, hidden_channels=32, out_channels=8)
    cfg = {
        "model": {"name": "BYOL", "backbone": dict(TINY_BACKBONE), "projector": neck,
                  "predictor": dict(neck, in_channels=8)},
        "data": {"train": {"dataset": {"name": "MultiView", "views": views, "dataset": {
            "name": "ImageFolder", "root": os.path.join(tiny_data, "train")}},
            "batch_size": 16, "num_workers": 0}},
        "optimizer": {"name": "AdamW", "lr": 0.001},
        "train": {"epochs": 1, "max_steps": 2, "output_dir": str(tmp_path / "ssl"),
                  "log_interval": 1},
    }
    log = train_log(cfg)
    named = re.search(r"checkpoints: (\S+) \(([^)]*)\)", log)
    assert named, log
    files = named.group(2).split(", ")
    assert files == ["latest.pdckpt"]
    assert all(os.path.isfile(os.path.join(named.group(1), f)) for f in files)
    assert "best.pdckpt" not in log


def test_ssl_demo_echoes_the_runs_progress(tmp_path, tiny_data, capsys):
    demo = load_tool("ssl_demo")
    cfg = tiny_train_config(tiny_data, str(tmp_path / "run"), epochs=1, log_interval=3)
    wall, cpu = demo.run(["-c", write_yaml(tmp_path / "t.yaml", cfg)])
    out = capsys.readouterr().out
    assert "$ tools/train.py -c" in out
    assert re.search(r"^    epoch 1/1 step 3/6 loss", out, re.M), out
    assert re.search(r"^    done: 6 steps", out, re.M), out
    assert wall > 0
