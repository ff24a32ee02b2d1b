"""The ImageNet recipe's training augmentation is unchanged: a fixed image through it.

tests/data/recipe_fixture.jpg (160x120) goes through data.train of
configs/_base_/datasets/imagenet.yaml as the loader's dataset runs it (RandomResizedCrop bicubic
224, flip, RandAugment m15; Normalize on the device), sample 0 in epochs 0..15 of seed 0. Stored
in tests/data/recipe_fixture_expected.json and compared:

- the pipeline's repr (every parameter of the recipe), exactly;
- per sample, the crop box, the flip and the RandAugment ops applied with their levels, exactly:
  they are drawn from the sample's generator, so a changed crop scale/ratio range, flip
  probability, op list, magnitude or draw order changes them;
- per sample, the output's 8x8 grid of 28x28 block means (per channel, 0..255, stored rounded
  to whole values): mean absolute difference < MEAN_TOLERANCE, largest < MAX_TOLERANCE.

Pillow and Pillow-SIMD (requirements/pillow-simd.txt) round their bicubic resampling
differently. On this fixture the full 224x224 outputs of Pillow 13.0.0 and Pillow-SIMD
12.1.1.post0 differ by a mean absolute 0.016 of 255 per sample at most (0.0025 over all 16),
single pixels by 1-3, except a few where a 1-level difference crosses a threshold of Equalize /
SolarizeAdd (up to 255, i.e. < 0.4 on a 28x28 block mean). A block mean differs by no more than
its pixels' mean, so the bounds hold for both builds with the storage rounding (<= 0.5) on top,
while another crop, flip or op moves block means by tens.

Regenerate the expected file only when the recipe is meant to change:
``PYTHONPATH=. python tests/test_data_recipe.py --write``.
"""
import json
import os
import shutil
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from passl_mixer.config import load_config  # noqa: E402
from passl_mixer.data import build_dataloader, randaugment  # noqa: E402
from passl_mixer.data.transforms import RandomHorizontalFlip, RandomResizedCrop  # noqa: E402

FIXTURE = os.path.join(ROOT, "tests", "data", "recipe_fixture.jpg")
EXPECTED = os.path.join(ROOT, "tests", "data", "recipe_fixture_expected.json")
RECIPE = os.path.join(ROOT, "configs", "_base_", "datasets", "imagenet.yaml")
EPOCHS = 16
BLOCK = 28  # 224 / 8
MEAN_TOLERANCE = 1.0  # of 255: mean |difference| of a sample's block means
MAX_TOLERANCE = 4.0   # of 255: any one block mean


def run_recipe(folder: str, monkeypatch=None) -> dict:
    """The recipe on the fixture: the pipeline's repr and, per epoch, what was drawn and the
    output's block means."""
    os.makedirs(os.path.join(folder, "class_a"), exist_ok=True)
    shutil.copy(FIXTURE, os.path.join(folder, "class_a", "fixture.jpg"))
    cfg = dict(load_config(RECIPE)["data"]["train"], num_workers=0, batch_size=1)
    cfg["dataset"] = dict(name="ImageFolder", root=folder)
    loader = build_dataloader(cfg, train=True, seed=0, world_size=1, rank=0)
    dataset = loader.dataset
    drawn: dict = {}

    # Record the draws: wrappers around the crop's resize, the flip and each RandAugment op.
    resize_box, flip = RandomResizedCrop.resize_box, RandomHorizontalFlip.apply

    def record_box(self, img, box, reduction=1.0):
        drawn["box"] = [int(v) for v in box]
        return resize_box(self, img, box, reduction)

    def record_flip(self, img, rng):
        drawn["flip"] = True
        return flip(self, img, rng)

    def recording(name, op):
        def wrapped(img, level, *args):
            drawn["ops"].append([name, round(float(level), 6)])
            return op(img, level, *args)
        return wrapped

    patches = [(RandomResizedCrop, "resize_box", record_box),
               (RandomHorizontalFlip, "apply", record_flip)]
    patches += [(randaugment.OPS, name, recording(name, op))
                for name, op in randaugment.OPS.items()]
    for target, name, value in patches:
        if isinstance(target, dict):
            monkeypatch.setitem(target, name, value)
        else:
            monkeypatch.setattr(target, name, value)
    samples = []
    for epoch in range(EPOCHS):
        drawn.clear()
        drawn.update(box=None, flip=False, ops=[])
        dataset.set_epoch(epoch)
        image, _ = dataset[0]
        assert image.dtype == np.uint8 and image.shape == (3, 224, 224)
        blocks = image.astype(np.float64).reshape(3, 8, BLOCK, 8, BLOCK).mean(axis=(2, 4))
        samples.append(dict(drawn, blocks=blocks))
    device_tail = [repr(t) for stage in loader.device_stages
                   for t in [stage.normalize] + stage.erasers]
    return dict(pipeline=repr(dataset.transforms), device=device_tail, samples=samples)


def test_recipe_on_fixed_image(tmp_path, monkeypatch):
    with open(EXPECTED) as f:
        expected = json.load(f)
    got = run_recipe(str(tmp_path), monkeypatch)
    assert got["pipeline"] == expected["pipeline"]
    assert got["device"] == expected["device"]
    assert len(got["samples"]) == len(expected["samples"]) == EPOCHS
    for epoch, (g, e) in enumerate(zip(got["samples"], expected["samples"])):
        assert (g["box"], g["flip"], g["ops"]) == (e["box"], e["flip"], e["ops"]), \
            f"epoch {epoch}: other draws than the recipe's"
        stored = np.frombuffer(bytes.fromhex(e["blocks"]), np.uint8).reshape(3, 8, 8)
        difference = np.abs(g["blocks"] - stored)
        assert difference.mean() < MEAN_TOLERANCE and difference.max() < MAX_TOLERANCE, \
            f"epoch {epoch}: mean |difference| {difference.mean():.2f}, largest " \
            f"{difference.max():.2f} of 255 from the recipe's output"
    # The fixture exercises the recipe: crops of different sizes, both flips, several ops.
    boxes = {tuple(s["box"]) for s in expected["samples"]}
    assert len(boxes) == EPOCHS
    assert {s["flip"] for s in expected["samples"]} == {False, True}
    assert len({op for s in expected["samples"] for op, _ in s["ops"]}) >= 8


def test_recipe_check_fails_on_a_changed_recipe(tmp_path, monkeypatch):
    """A different crop scale range or magnitude draws other boxes / levels than stored."""
    with open(EXPECTED) as f:
        expected = json.load(f)
    init = RandomResizedCrop.__init__

    def narrower(self, size, scale=(0.08, 1.0), *args, **kwargs):
        init(self, size, (0.25, 1.0), *args, **kwargs)

    monkeypatch.setattr(RandomResizedCrop, "__init__", narrower)
    got = run_recipe(str(tmp_path / "crop"), monkeypatch)
    assert got["pipeline"] != expected["pipeline"]
    assert [s["box"] for s in got["samples"]] != [s["box"] for s in expected["samples"]]
    monkeypatch.undo()

    sample_magnitude = randaugment.RandAugment._sample_magnitude
    monkeypatch.setattr(randaugment.RandAugment, "_sample_magnitude",
                        lambda self, rng: sample_magnitude(self, rng) * 9 / 15)
    got = run_recipe(str(tmp_path / "magnitude"), monkeypatch)
    assert [s["ops"] for s in got["samples"]] != [s["ops"] for s in expected["samples"]]


class _Patcher:
    """monkeypatch's setattr / setitem, for running this file as a script."""

    def setattr(self, target, name, value):
        setattr(target, name, value)

    def setitem(self, target, name, value):
        target[name] = value


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        result = run_recipe(tmp, _Patcher())
    for sample in result["samples"]:
        sample["blocks"] = np.round(sample["blocks"]).astype(np.uint8).tobytes().hex()
    with open(EXPECTED, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print(f"wrote {EXPECTED}")
