"""Interruptions: kill -9 mid-run then --resume auto; kill during a checkpoint write."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np

from conftest import (ROOT, final_weights, max_weight_diff, run_tool, tiny_train_config,
                      write_yaml)
from passl_mixer.engine.checkpoint import find_resume_checkpoint, load_checkpoint


def wait_for(path, proc, timeout=120):
    start = time.time()
    while not os.path.exists(path):
        assert proc.poll() is None, f"training ended before {path} appeared"
        assert time.time() - start < timeout
        time.sleep(0.005)


def test_kill9_then_resume_auto_equals_uninterrupted(tiny_data, tmp_path):
    epochs = 8
    ref, run = str(tmp_path / "ref"), str(tmp_path / "run")
    cfg_ref = write_yaml(tmp_path / "ref.yaml", tiny_train_config(tiny_data, ref, epochs=epochs,
                                                                  keep_last=0))
    cfg_run = write_yaml(tmp_path / "run.yaml", tiny_train_config(tiny_data, run, epochs=epochs,
                                                                  keep_last=0))
    run_tool(["tools/train.py", "-c", cfg_ref])

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "tools/train.py"), "-c", cfg_run],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(os.path.join(run, "checkpoints", "epoch_0003.pdckpt"), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed_from = load_checkpoint(find_resume_checkpoint(run))["epoch"]
    assert 3 <= resumed_from < epochs, "the kill must land mid-run"

    out = run_tool(["tools/train.py", "-c", cfg_run, "--resume", "auto"])
    assert "resumed from" in out.stdout and f"epoch {resumed_from}" in out.stdout
    assert max_weight_diff(final_weights(ref), final_weights(run)) <= 1e-6
    assert load_checkpoint(os.path.join(run, "checkpoints", "latest.pdckpt"))["epoch"] == epochs


SLOW_SAVE = textwrap.dedent("""
    import sys
    import numpy as np
    from passl_mixer.engine.checkpoint import save_checkpoint
    # a large state so that the write takes long enough to be interrupted
    state = {"model": {f"w{i}": np.full((1024, 1024, 8), i, np.float32) for i in range(24)},
             "epoch": 2, "global_step": 20}
    print("saving", flush=True)
    save_checkpoint(state, sys.argv[1])
""")


def test_kill_during_checkpoint_write_keeps_the_previous_one(tmp_path, tiny_data):
    out = str(tmp_path / "run")
    cfg = write_yaml(tmp_path / "c.yaml", tiny_train_config(tiny_data, out, epochs=1))
    run_tool(["tools/train.py", "-c", cfg])
    latest = os.path.join(out, "checkpoints", "latest.pdckpt")
    before = final_weights(out)

    script = tmp_path / "slow_save.py"
    script.write_text(SLOW_SAVE)
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, str(script), latest], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout.readline().strip() == "saving"
    cdir = os.path.dirname(latest)
    start = time.time()
    while not any(n.endswith(".tmp") and os.path.getsize(os.path.join(cdir, n)) > 0
                  for n in os.listdir(cdir)):
        assert proc.poll() is None, "the save finished before it could be interrupted"
        assert time.time() - start < 60
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    assert any(n.endswith(".tmp") for n in os.listdir(cdir))  # the torn write is left aside
    after = final_weights(out)
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert find_resume_checkpoint(out) == latest
    # a resumed run starts from the intact checkpoint, and clears the torn temp file
    proc = run_tool(["tools/train.py", "-c", cfg, "--resume", "auto", "-o", "train.epochs=2"])
    assert "resumed from" in proc.stdout and "epoch 1" in proc.stdout
    assert not any(n.endswith(".tmp") for n in os.listdir(cdir))
