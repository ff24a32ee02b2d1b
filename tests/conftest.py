import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import pytest  # noqa: E402

# A Mixer small enough that a forward/backward pass takes milliseconds.
TINY_BACKBONE = dict(name="MlpMixer", patch_size=4, hidden_dim=32, num_blocks=2,
                     tokens_mlp_dim=16, channels_mlp_dim=64, img_size=16)
# One tiny config per registered backbone family, all 16x16 images -> 16 tokens of 32 channels in
# 2 blocks. tests/test_backbone_contract.py fails for a registered backbone without an entry,
# and test_families_export.py / test_families_ssl.py run every entry.
TINY_BACKBONES = {
    "MlpMixer": TINY_BACKBONE,
    "GMLP": dict(name="GMLP", patch_size=4, hidden_dim=32, num_blocks=2, channels_mlp_dim=64,
                 img_size=16),
    "ResMLP": dict(name="ResMLP", patch_size=4, hidden_dim=32, num_blocks=2, channels_mlp_dim=64,
                   img_size=16),
    "FNet": dict(name="FNet", patch_size=4, hidden_dim=32, num_blocks=2, mlp_dim=64, img_size=16),
}


@pytest.fixture
def tiny_backbone_cfg():
    return dict(TINY_BACKBONE)


@pytest.fixture
def tiny_classifier_cfg():
    return dict(name="ImageClassifier", backbone=dict(TINY_BACKBONE),
                head=dict(name="LinearClsHead", num_classes=10, in_channels=32))


@pytest.fixture(autouse=True)
def restore_package_logger():
    """A Trainer or tool run in this process calls setup_logging, which points the package
    logger at pytest's captured stdout (closed after the test) and stops it propagating to the
    root logger, where caplog listens: put it back as it was after every test."""
    import logging

    logger = logging.getLogger("passl_mixer")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    yield
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        if handler not in saved[0]:
            handler.close()
    for handler in saved[0]:
        logger.addHandler(handler)
    logger.propagate, logger.level = saved[1], saved[2]


# -- tiny image data and training configs ---------------------------------------------------
import subprocess  # noqa: E402

import numpy as np  # noqa: E402
import yaml  # noqa: E402

TINY_CLASSES = 4


def make_image_folder(root, per_class_train=24, per_class_val=6, size=16, seed=0):
    """Class-folder train/val sets of small RGB PNGs whose class is learnable (a colour and a
    bar position per class, plus noise)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class_train), ("val", per_class_val)):
        for c in range(TINY_CLASSES):
            d = os.path.join(root, split, f"class_{c}")
            os.makedirs(d, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
                img[:, :, c % 3] += 120
                img[c * size // TINY_CLASSES:(c + 1) * size // TINY_CLASSES, :, :] = 250
                Image.fromarray(img).save(os.path.join(d, f"{i:03d}.png"))
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    return make_image_folder(str(tmp_path_factory.mktemp("tiny_data")))


def tiny_train_config(data_root, output_dir, **train):
    return {
        "model": {"name": "ImageClassifier", "backbone": dict(TINY_BACKBONE),
                  "head": {"name": "LinearClsHead", "num_classes": TINY_CLASSES, "in_channels": 32}},
        "data": {
            "train": {"dataset": {"name": "ImageFolder", "root": os.path.join(data_root, "train")},
                      "transforms": [{"name": "RandomResizedCrop", "size": 16, "scale": [0.5, 1.0]},
                                     {"name": "RandomHorizontalFlip"}, {"name": "Normalize"}],
                      "batch_size": 16, "num_workers": 0},
            "val": {"dataset": {"name": "ImageFolder", "root": os.path.join(data_root, "val")},
                    "transforms": [{"name": "Resize", "size": [16, 16]}, {"name": "Normalize"}],
                    "batch_size": 5, "num_workers": 0},
        },
        "optimizer": {"name": "AdamW", "lr": 0.003, "weight_decay": 0.05, "grad_clip": 1.0},
        "lr_scheduler": {"name": "Cosine", "warmup_steps": 2},
        "train": {"epochs": 2, "output_dir": output_dir, "log_interval": 2, "seed": 3, **train},
    }


def write_yaml(path, cfg):
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    return str(path)


def run_tool(args, cwd=None, env=None, launch_procs=0, timeout=300, check=True):
    """Run a tools/*.py script (under paddle.distributed.launch when launch_procs > 0) with one
    math thread per process, so results do not depend on thread scheduling."""
    full_env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    full_env["PYTHONPATH"] = ROOT + os.pathsep + full_env.get("PYTHONPATH", "")
    cmd = [sys.executable]
    if launch_procs:
        cmd += ["-m", "paddle.distributed.launch", "--nproc_per_node", str(launch_procs)]
    cmd += [os.path.join(ROOT, args[0])] + list(args[1:])
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        logs = ""
        if launch_procs and cwd:
            for name in sorted(os.listdir(os.path.join(cwd, "log"))) if os.path.isdir(
                    os.path.join(cwd, "log")) else []:
                with open(os.path.join(cwd, "log", name), errors="replace") as f:
                    logs += f"\n--- log/{name}\n" + f.read()[-3000:]
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n"
                             f"{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}{logs}")
    return proc


def train_one_and_two_processes(tmp_path, cfg1, cfg2):
    """Train ``cfg1`` in one process and ``cfg2`` in two (gloo, launched from ``tmp_path`` so
    the launcher's log/ stays there); returns the two-process run's train.log text."""
    run_tool(["tools/train.py", "-c", write_yaml(tmp_path / "one.yaml", cfg1)])
    run_tool(["tools/train.py", "-c", write_yaml(tmp_path / "two.yaml", cfg2)],
             cwd=str(tmp_path), launch_procs=2)
    with open(os.path.join(cfg2["train"]["output_dir"], "train.log")) as f:
        return f.read()


def load_tool(name):
    """tools/<name>.py as a module (tools/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"tool_{name}",
                                                  os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_in_process(tool, argv, capsys):
    """(exit status, stdout, stderr) of ``cli.run(tool.main, argv)``, exactly as the command
    runs it, in this process (seconds faster than a subprocess per case)."""
    from passl_mixer.cli import run

    with pytest.raises(SystemExit) as exit_info:
        run(tool.main, argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def final_weights(output_dir, name="latest.pdckpt"):
    from passl_mixer.checkpoints.weights import load_weights
    return load_weights(os.path.join(output_dir, "checkpoints", name))


def max_weight_diff(a, b):
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)
