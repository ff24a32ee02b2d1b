"""The data benchmark: the per-core rate on the loader's own samples, and --compare."""
import argparse
import os

import numpy as np
import PIL
import pytest
from PIL import Image

from passl_mixer.benchmarks import data as data_benchmark
from passl_mixer.data import loader_throughput, timed_batches, write_synthetic_jpegs
from passl_mixer.data.loader import Loader

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_timed_batches_are_the_loaders(tmp_path, monkeypatch):
    """The per-core child is sent timed_batches(...): the very samples loader_throughput makes
    with the same arguments, across an epoch boundary too."""
    for i in range(23):
        path = tmp_path / f"c{i // 8}" / f"{i:02d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(np.full((6, 6), i, dtype=np.uint8)).save(path)
    made = []
    to_device = Loader._to_device

    def record(self, batch, indices, epoch):
        made.append((epoch, [int(i) for i in indices]))
        return to_device(self, batch, indices, epoch)

    monkeypatch.setattr(Loader, "_to_device", record)
    # 23 images, batch 4, 5 timed + 1 untimed batches: epochs of 5 batches, so two epochs
    loader_throughput(str(tmp_path), None, batch_size=4, num_workers=0, num_batches=5, seed=3,
                      epoch=2)
    expected = timed_batches(23, 4, 5, seed=3, epoch=2)
    assert [e for e, _ in expected] == [2] * 5 + [3]
    assert made[:6] == [tuple(b) for b in expected]


def parse(argv):
    parser = argparse.ArgumentParser()
    data_benchmark.add_args(parser)
    return parser.parse_args(argv)


@pytest.fixture
def jpegs(tmp_path):
    write_synthetic_jpegs(str(tmp_path / "img"), 8, size=(36, 48), num_classes=2)
    return ["--image-dir", str(tmp_path / "img"), "--batch-size", "2", "--num-batches", "2"]


def test_compare_times_each_pythonpath_in_its_own_process(jpegs):
    result = data_benchmark.run(parse(jpegs + ["--rounds", "2", "--compare", f"a={ROOT}",
                                               "--compare", f"b={ROOT}"]))
    a, b = result["per_core"]
    assert (a["name"], b["name"]) == ("a", "b") and a["pythonpath"] == ROOT
    for side in (a, b):
        assert side["img_per_cpu_s"] > 0 and side["img_per_s"] > 0
        assert side["passl_mixer"] == os.path.join(ROOT, "passl_mixer")
        assert side["pillow"]["version"] == PIL.__version__
        assert isinstance(side["pillow"]["simd"], bool)
    assert "ratio" not in a and b["ratio"] > 0 and len(b["ratio_range"]) == 2
    assert result["results"] == []  # --compare: per-core rates only


def test_default_mode_per_core_and_loader(jpegs):
    result = data_benchmark.run(parse(jpegs + ["--rounds", "1", "--num-workers", "1"]))
    assert result["per_core"][0]["name"] == "this checkout"
    assert result["per_core_img_per_cpu_s"] > 0
    (loaded,) = result["results"]
    assert loaded["num_workers"] == 1 and loaded["efficiency"] > 0


def test_compare_needs_name_and_pythonpath():
    with pytest.raises(SystemExit, match="NAME=PYTHONPATH"):
        data_benchmark.parse_compare(["no-equals-sign"])
