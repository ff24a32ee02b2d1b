"""tools/cifar10_to_folders.py on a tiny archive in the CIFAR-10 binary format."""
import io
import os
import tarfile

import numpy as np
import pytest
from PIL import Image

from conftest import load_tool
from passl_mixer.cli import run

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]


def fake_archive(path, rng, per_batch=2, drop=None):
    members = {"cifar-10-batches-bin/batches.meta.txt": ("\n".join(CLASSES) + "\n\n").encode()}
    images = {}
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels = rng.integers(0, 10, per_batch, dtype=np.uint8)
        pixels = rng.integers(0, 256, (per_batch, 3, 32, 32), dtype=np.uint8)
        images[name] = (labels, pixels)
        records = np.concatenate([labels[:, None], pixels.reshape(per_batch, -1)], axis=1)
        members[f"cifar-10-batches-bin/{name}"] = records.tobytes()
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            if drop and name.endswith(drop):
                continue
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return images


def test_unpacks_into_class_folders(tmp_path):
    rng = np.random.default_rng(0)
    images = fake_archive(tmp_path / "c.tar.gz", rng)
    out = tmp_path / "cifar10"
    with pytest.raises(SystemExit) as exit_info:
        run(load_tool("cifar10_to_folders").main, ["--src", str(tmp_path / "c.tar.gz"), "--output", str(out)])
    assert exit_info.value.code == 0
    assert sorted(os.listdir(out / "train")) == CLASSES
    labels, pixels = images["test_batch.bin"]
    first = np.asarray(Image.open(out / "test" / CLASSES[labels[0]] / "test_00000.png"))
    np.testing.assert_array_equal(first, pixels[0].transpose(1, 2, 0))  # planes -> HWC
    assert sum(len(files) for _, _, files in os.walk(out / "train")) == 10


def test_python_version_or_truncated_archive_is_refused(tmp_path, capsys):
    fake_archive(tmp_path / "c.tar.gz", np.random.default_rng(0), drop="test_batch.bin")
    with pytest.raises(SystemExit) as exit_info:
        run(load_tool("cifar10_to_folders").main, ["--src", str(tmp_path / "c.tar.gz"), "--output",
                               str(tmp_path / "out")])
    assert exit_info.value.code == 2 and "test_batch.bin" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
