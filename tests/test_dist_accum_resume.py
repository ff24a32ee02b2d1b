"""Gradient accumulation across processes (no all-reduce before the last micro-batch) and
resuming from a checkpoint written with another number of devices (issue 11, items 2 and 6)."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import paddle

from conftest import (ROOT, final_weights, max_weight_diff, run_tool, tiny_train_config,
                      train_one_and_two_processes, write_yaml)
from passl_mixer.engine.checkpoint import load_checkpoint, save_checkpoint


def sgd(cfg):
    # SGD, not Adam: see test_train_distributed.test_two_processes_equal_one_process
    cfg["optimizer"] = {"name": "SGD", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4,
                        "grad_clip": 1.0}
    return cfg


# Run under paddle.distributed.launch with 2 processes: builds the Trainer exactly as
# tools/train.py does and drives its own _forward_backward through one accumulation step.
MICRO_STEPS = textwrap.dedent("""
    import json, sys
    import numpy as np
    import paddle
    import paddle.distributed as pdist
    import yaml
    from passl_mixer.engine import Trainer

    cfg = yaml.safe_load(open(sys.argv[1]))
    trainer = Trainer(cfg)
    assert trainer.world_size == 2 and trainer.accum_steps == 2
    assert isinstance(trainer.train_model, paddle.DataParallel)
    trainer.train_loader.set_epoch(0)
    trainer.train_model.train()

    def grads_on_every_rank():
        g = paddle.concat([p.grad.reshape([-1]) for p in trainer.model.parameters()
                           if p.grad is not None])
        gathered = []
        pdist.all_gather(gathered, g)
        return [t.numpy() for t in gathered]

    batches = iter(trainer.train_loader)
    result = {}
    for micro, name in ((1, "after_first"), (2, "after_last")):
        images, labels = next(batches)
        trainer._forward_backward(images, labels, sync=micro == trainer.accum_steps)
        g0, g1 = grads_on_every_rank()
        result[name] = float(np.abs(g0 - g1).max())
        result[name + "_size"] = float(np.abs(g0).max())
    if trainer.rank == 0:
        json.dump(result, open(sys.argv[2], "w"))
""")


def test_non_final_micro_batches_are_not_all_reduced(tiny_data, tmp_path):
    """Paddle's DataParallel decides in forward() whether the coming backward all-reduces, so
    a no_sync() around the backward alone still synchronised every micro-batch: the two ranks'
    gradients were identical after the first of two micro-batches (they must differ: each rank
    saw other images), and accumulation cost accum_steps times the traffic."""
    cfg = sgd(tiny_train_config(tiny_data, str(tmp_path / "out"), epochs=1, accum_steps=2))
    cfg["data"]["train"]["batch_size"] = 4
    script = tmp_path / "micro_steps.py"
    script.write_text(MICRO_STEPS)
    result_path = tmp_path / "result.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node",
                           "2", str(script), write_yaml(tmp_path / "c.yaml", cfg),
                           str(result_path)], cwd=str(tmp_path), env=env, capture_output=True,
                          text=True, timeout=300)
    logs = "".join(open(os.path.join(tmp_path, "log", n), errors="replace").read()[-3000:]
                   for n in sorted(os.listdir(tmp_path / "log"))) if (tmp_path / "log").is_dir() \
        else ""
    assert proc.returncode == 0, proc.stderr[-3000:] + logs
    r = json.loads(result_path.read_text())
    # local gradients after a non-final micro-batch: each rank's own, not yet averaged
    assert r["after_first"] > 1e-3 * r["after_first_size"], r
    # after the last micro-batch: all-reduced, the same on both ranks
    assert r["after_last"] <= 1e-6 * max(1.0, r["after_last_size"]), r


def test_two_process_accumulation_equals_one_process_large_batch(tiny_data, tmp_path):
    """16 = 16 x 1 process x 1 step = 4 x 2 processes x 2 accumulation steps."""
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    cfg1 = sgd(tiny_train_config(tiny_data, one, epochs=2))
    cfg2 = sgd(tiny_train_config(tiny_data, two, epochs=2, accum_steps=2))
    cfg2["data"]["train"]["batch_size"] = 4
    log = train_one_and_two_processes(tmp_path, cfg1, cfg2)
    assert "global batch 16 = 4 per device x 2 process(es) x 2 accumulation" in log
    assert max_weight_diff(final_weights(one), final_weights(two)) <= 1e-5


def test_resume_from_a_checkpoint_with_another_device_count(tiny_data, tmp_path):
    """paddle.get_rng_state() holds one generator state per visible device, and
    paddle.set_rng_state raises ValueError when the list's length differs from this process's
    device count (8 GPUs -> 4 GPUs, GPU -> CPU). The generator is re-seeded at every epoch
    start, so such a checkpoint resumes, skipping that state with a note, to the same weights."""
    ref, run = str(tmp_path / "ref"), str(tmp_path / "run")
    cfg_ref = write_yaml(tmp_path / "ref.yaml", tiny_train_config(tiny_data, ref, epochs=3))
    cfg_run = write_yaml(tmp_path / "run.yaml", tiny_train_config(tiny_data, run, epochs=3))
    run_tool(["tools/train.py", "-c", cfg_ref])
    run_tool(["tools/train.py", "-c", cfg_run, "-o", "train.max_steps=6"])  # 6 steps = 1 epoch

    # as written by a process that saw 8 devices
    latest = os.path.join(run, "checkpoints", "latest.pdckpt")
    state = load_checkpoint(latest)
    saved = state["rng"]["paddle"]
    assert len(saved) == len(paddle.get_rng_state()) == 1
    state["rng"]["paddle"] = list(saved) * 8
    save_checkpoint(state, latest)
    assert len(load_checkpoint(latest)["rng"]["paddle"]) == 8

    out = run_tool(["tools/train.py", "-c", cfg_run, "--resume", latest])
    assert "resumed from" in out.stdout and "epoch 1" in out.stdout
    assert "8 device" in out.stdout  # the note saying the generator state was not restored
    assert load_checkpoint(latest)["epoch"] == 3
    assert max_weight_diff(final_weights(ref), final_weights(run)) <= 1e-6


def test_resume_with_the_same_device_count_restores_the_generator(tiny_data, tmp_path):
    """The matching case keeps restoring Paddle's generator state (as before)."""
    from passl_mixer.engine import Trainer
    out = str(tmp_path / "run")
    cfg = tiny_train_config(tiny_data, out, epochs=1)
    Trainer(cfg).train()
    latest = os.path.join(out, "checkpoints", "latest.pdckpt")
    saved = load_checkpoint(latest)["rng"]["paddle"]
    paddle.seed(12345)
    assert paddle.get_rng_state()[0].current_seed() != saved[0].current_seed()
    Trainer(dict(cfg, train=dict(cfg["train"], epochs=2)), resume=latest)
    assert paddle.get_rng_state()[0].current_seed() == saved[0].current_seed()
    np.testing.assert_array_equal(paddle.rand([4]).numpy(), _draw_after(saved))


def _draw_after(state):
    paddle.set_rng_state(state)
    return paddle.rand([4]).numpy()
