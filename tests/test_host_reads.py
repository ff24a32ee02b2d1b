"""The training loop and evaluation read the device back only where they must: training at its
log lines and epoch ends (the loss and accuracy are summed on the device in between), evaluation
once at its end. Every way a Python caller brings a paddle.Tensor's value to the host is counted
during real runs. A NaN or infinite loss still stops the run, naming the step range and the
first bad step, before any checkpoint is written."""
import json
import os
import textwrap

import paddle
import pytest

from conftest import TINY_BACKBONE, run_tool, tiny_train_config, write_yaml
from passl_mixer.engine import Trainer, TrainingDiverged, evaluate

# the paddle.Tensor methods that copy a tensor's value to the host (on a GPU: wait for it)
READS = ("__float__", "__int__", "__bool__", "__index__", "__complex__", "__format__",
         "__array__", "__repr__", "__str__", "item", "numpy", "tolist", "cpu")


class ReadCounter:
    """Patches the READS methods of paddle.Tensor; each outermost call (``__format__`` calls
    ``item``, which may call ``numpy``: one read) is recorded as ``where()``'s value then."""

    def __init__(self, monkeypatch, where=lambda: None):
        self.where = where
        self.reads = []  # (where(), method name)
        self._depth = 0
        for name in READS:
            original = getattr(paddle.Tensor, name, None)
            if original is not None:
                monkeypatch.setattr(paddle.Tensor, name, self._counted(name, original))

    def _counted(self, name, original):
        def counted(tensor, *args, **kwargs):
            if self._depth == 0:
                self.reads.append((self.where(), name))
            self._depth += 1
            try:
                return original(tensor, *args, **kwargs)
            finally:
                self._depth -= 1
        return counted


def classifier_config(data, out):
    """Gradient accumulation, Mixup, EMA and gradient clipping: everything that runs per step."""
    cfg = tiny_train_config(data, out, epochs=2, accum_steps=2, log_interval=4, log_seconds=0,
                            ema={"decay": 0.9})
    cfg["data"]["train"]["batch_size"] = 8  # 96 images: 12 micro-batches, 6 updates per epoch
    cfg["data"]["mixup"] = {"mixup_alpha": 0.8, "cutmix_alpha": 1.0, "switch_prob": 0.5}
    return cfg


def ssl_config(data, out, name):
    """MoCo v3 (contrastive accuracy, momentum encoder) or BYOL (no accuracy, target network),
    whose after_step hook moves an average every update."""
    views = [[{"name": "RandomResizedCrop", "size": 16, "scale": [0.3, 1.0]},
              {"name": "Normalize"}]] * 2
    neck = dict(name="MLPNeck", in_channels=32, hidden_channels=32, out_channels=8)
    model = {"name": name, "backbone": dict(TINY_BACKBONE), "projector": neck,
             "predictor": dict(neck, in_channels=8)}
    return {
        "model": model,
        "data": {"train": {"dataset": {"name": "MultiView", "views": views, "dataset": {
            "name": "ImageFolder", "root": os.path.join(data, "train")}},
            "batch_size": 16, "num_workers": 0}},
        "optimizer": {"name": "AdamW", "lr": 0.001, "grad_clip": 1.0},
        "lr_scheduler": {"name": "Cosine", "warmup_steps": 2},
        "train": {"epochs": 2, "output_dir": out, "log_interval": 4, "log_seconds": 0},
    }


def track_updates(trainer, monkeypatch):
    """A ``where()`` for ReadCounter: (optimizer updates done, whether an update is under way,
    i.e. its first micro-batch's forward has started and its after_step hook has not returned)."""
    state = {"in_update": False}
    forward_backward, after_step = trainer._forward_backward, trainer.model.after_step

    def tracked_forward_backward(*args, **kwargs):
        state["in_update"] = True
        return forward_backward(*args, **kwargs)

    def tracked_after_step(*args, **kwargs):
        after_step(*args, **kwargs)
        state["in_update"] = False

    monkeypatch.setattr(trainer, "_forward_backward", tracked_forward_backward)
    monkeypatch.setattr(trainer.model, "after_step", tracked_after_step)
    return lambda: (trainer.global_step, state["in_update"])


@pytest.mark.parametrize("model", ["ImageClassifier", "MoCoV3", "BYOL"])
def test_no_device_reads_between_log_lines(tiny_data, tmp_path, monkeypatch, model):
    out = str(tmp_path / "run")
    cfg = (classifier_config(tiny_data, out) if model == "ImageClassifier"
           else ssl_config(tiny_data, out, model))
    trainer = Trainer(cfg, config_name="t")
    assert trainer.steps_per_epoch == 6 and trainer.total_steps == 12
    counter = ReadCounter(monkeypatch, track_updates(trainer, monkeypatch))
    trainer.train()

    log_lines, epoch_ends = {4, 8, 12}, {6, 12}
    during_updates = [(step, name) for (step, busy), name in counter.reads if busy]
    assert during_updates == [], "device reads inside an optimizer update (step, method)"
    steps_read_after = {step for (step, busy), _ in counter.reads if not busy}
    assert steps_read_after <= log_lines | epoch_ends | {0}, \
        "device reads after a step that neither logs nor ends an epoch"
    # the counter sees the reads that do happen: one per log line inside an epoch
    after = {s: sum(1 for (step, busy), _ in counter.reads if step == s) for s in (4, 8)}
    assert after == {4: 1, 8: 1}
    assert any(step == 6 for (step, _), _ in counter.reads)  # the epoch end's check and save


def test_evaluation_reads_once_however_many_batches(tiny_data, tmp_path, monkeypatch):
    trainer = Trainer(tiny_train_config(tiny_data, str(tmp_path / "run")), config_name="t")
    assert len(trainer.val_loader) == 5  # 24 images in batches of 5
    counter = ReadCounter(monkeypatch)
    metrics = evaluate(trainer.model, trainer.val_loader)
    assert len(counter.reads) == 1
    assert metrics["num_samples"] == 24 and 0.0 <= metrics["top1"] <= 100.0


def inject_nan(trainer, monkeypatch, at_micro_batch):
    """Make the loss of the at_micro_batch-th micro-batch (1-based, counted over the run) NaN."""
    forward_backward = trainer._forward_backward
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        out = forward_backward(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == at_micro_batch:
            out = dict(out, loss=out["loss"] * float("nan"))
        return out

    monkeypatch.setattr(trainer, "_forward_backward", poisoned)


def checkpoint_files(out):
    cdir = os.path.join(out, "checkpoints")
    return sorted(os.listdir(cdir)) if os.path.isdir(cdir) else []


def test_nan_at_a_log_line_names_its_window_and_step(tiny_data, tmp_path, monkeypatch):
    out = str(tmp_path / "run")
    trainer = Trainer(classifier_config(tiny_data, out), config_name="t")
    # micro-batch 15 of the run is epoch 2's 3rd, in optimizer step 8; epoch 2's first window
    # (windows start afresh with each epoch) runs from step 7 to the log line at step 8
    inject_nan(trainer, monkeypatch, at_micro_batch=15)
    with pytest.raises(TrainingDiverged) as info:
        trainer.train()
    msg = str(info.value)
    assert "The loss became nan between optimizer steps 7 and 8" in msg
    assert "first at step 8: epoch 2, micro-batch 3" in msg
    assert "latest.pdckpt" in msg
    assert trainer.global_step == 8  # stopped at the log line, not later
    assert checkpoint_files(out) == ["best.pdckpt", "epoch_0001.pdckpt", "latest.pdckpt"]
    assert len(trainer.history) == 1  # epoch 2 was neither evaluated nor saved


def test_nan_after_the_last_log_line_stops_before_the_epochs_checkpoint(tiny_data, tmp_path,
                                                                        monkeypatch):
    out = str(tmp_path / "run")
    trainer = Trainer(classifier_config(tiny_data, out), config_name="t")
    inject_nan(trainer, monkeypatch, at_micro_batch=9)  # step 5; the next log line is step 8
    with pytest.raises(TrainingDiverged) as info:
        trainer.train()
    msg = str(info.value)
    assert "between optimizer steps 5 and 6 (first at step 5: epoch 1, micro-batch 9)" in msg
    assert "no checkpoint was written yet" in msg
    assert trainer.global_step == 6 and trainer.history == []
    assert checkpoint_files(out) == []


# Run under paddle.distributed.launch with 2 processes: rank 1 alone gets a NaN loss at its
# 3rd micro-batch; each rank writes the message it stopped with.
NAN_ON_ONE_RANK = textwrap.dedent("""
    import json, sys
    import yaml
    from passl_mixer.engine import Trainer, TrainingDiverged

    trainer = Trainer(yaml.safe_load(open(sys.argv[1])))
    forward_backward, calls = trainer._forward_backward, []

    def poisoned(*args, **kwargs):
        out = forward_backward(*args, **kwargs)
        calls.append(1)
        if trainer.rank == 1 and len(calls) == 3:
            out = dict(out, loss=out["loss"] * float("nan"))
        return out

    trainer._forward_backward = poisoned
    try:
        trainer.train()
        message = None
    except TrainingDiverged as exc:
        message = str(exc)
    json.dump({"message": message, "step": trainer.global_step},
              open(f"{sys.argv[2]}.{trainer.rank}.json", "w"))
""")


def test_a_nan_on_one_rank_stops_every_rank_at_the_same_step(tiny_data, tmp_path):
    out = str(tmp_path / "run")
    cfg = tiny_train_config(tiny_data, out, epochs=1, log_interval=4, log_seconds=0)
    cfg["data"]["train"]["batch_size"] = 8  # 48 images per rank: 6 steps
    script = tmp_path / "nan_on_one_rank.py"
    script.write_text(NAN_ON_ONE_RANK)
    result = str(tmp_path / "result")
    run_tool([str(script), write_yaml(tmp_path / "c.yaml", cfg), result], cwd=str(tmp_path),
             launch_procs=2)
    ranks = [json.load(open(f"{result}.{rank}.json")) for rank in (0, 1)]
    assert ranks[0] == ranks[1]  # the same decision, at the same step, on both ranks
    # rank 0's own losses turn NaN only at step 4 (after the averaged NaN gradient of step 3)
    assert ranks[0]["step"] == 4
    assert ("The loss became nan between optimizer steps 1 and 4 (first at step 3: epoch 1, "
            "micro-batch 3)") in ranks[0]["message"]
    assert checkpoint_files(out) == []
