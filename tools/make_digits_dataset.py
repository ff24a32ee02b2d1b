"""Write scikit-learn's 8x8 hand-written digits as a small class-folder image dataset.

    pip install scikit-learn   # only to run this script; passl-mixer never imports it
    python tools/make_digits_dataset.py [--output data/digits]

Writes ``OUTPUT/{train,val}/<digit>/NNNN.png`` (NNNN = the sample's index in
``sklearn.datasets.load_digits()``), 8x8 grayscale PNGs with the 0..16 values scaled to 0..255,
split per class 80/20 with a fixed seed, and ``OUTPUT/README.md``. The output is the same on
every run, so the shipped ``data/digits`` can be regenerated and compared.
"""
from __future__ import annotations

import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Paddle's C++ (glog) warnings, e.g. PIR's "... not support input out tensor for now!!!!!", are
# not for users of this tool; GLOG_minloglevel=0 shows them again
os.environ.setdefault("GLOG_minloglevel", "2")

from passl_mixer.cli import run, tool_parser  # noqa: E402
from passl_mixer.fileio import atomic_dir, write_text  # noqa: E402

VAL_FRACTION = 0.2
SPLIT_SEED = 0

README = """# Digits demo dataset

A tiny image-classification dataset for demos, smoke tests and CI: the 1,797 hand-written
digit images (8x8 pixels, grayscale, classes 0-9) that scikit-learn ships as
`sklearn.datasets.load_digits()`, written as PNG files in the class-folder layout that
`ImageFolder` reads.

## Origin and license

scikit-learn's copy is the test set of the *Optical Recognition of Handwritten Digits* data set
of the UCI Machine Learning Repository (E. Alpaydin and C. Kaynak, 1998;
https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits), which the
repository's page lists under the Creative Commons Attribution 4.0 International license
(CC BY 4.0). scikit-learn itself is BSD-3-Clause licensed. Cite the UCI data set when you use
these images.

## Layout and split

    train/<digit>/NNNN.png    {n_train} images
    val/<digit>/NNNN.png      {n_val} images

`NNNN` is the image's index in `load_digits()`. Pixel values 0..16 are scaled to 0..255
(`round(v * 255 / 16)`) and saved as 8-bit grayscale PNG. The split is stratified: within
each class, the sample indices are shuffled with `numpy.random.default_rng({seed})` (one
generator, classes in order 0..9) and the first `round({val_fraction} * class size)` go to
`val/`, the rest to `train/`.

Per class (train / val): {per_class}

Regenerate with `pip install scikit-learn && python tools/make_digits_dataset.py`: every run
writes the same split and the same pixels.
"""


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int):
    """(train indices, val indices), each sorted; per class a fixed share goes to val."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_val = int(round(val_fraction * len(members)))
        val.extend(members[:n_val])
        train.extend(members[n_val:])
    return np.sort(train), np.sort(val)


def main(argv=None) -> int:
    parser = tool_parser(__doc__)
    parser.add_argument("--output", default=os.path.join("data", "digits"),
                        help="output folder (default: data/digits); its train/ and val/ are "
                             "replaced")
    args = parser.parse_args(argv)
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        print("error: this script needs scikit-learn: pip install scikit-learn", file=sys.stderr)
        return 1

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    labels = digits.target
    train, val = stratified_split(labels, VAL_FRACTION, SPLIT_SEED)
    for split, indices in (("train", train), ("val", val)):
        # each split replaced whole, once complete: no stale files from an older split
        with atomic_dir(os.path.join(args.output, split)) as split_dir:
            for i in indices:
                class_dir = os.path.join(split_dir, str(labels[i]))
                os.makedirs(class_dir, exist_ok=True)
                Image.fromarray(images[i], "L").save(os.path.join(class_dir, f"{i:04d}.png"),
                                                     optimize=True)
    per_class = ", ".join(f"{c}: {np.sum(labels[train] == c)} / {np.sum(labels[val] == c)}"
                          for c in range(10))
    write_text(os.path.join(args.output, "README.md"),
               README.format(n_train=len(train), n_val=len(val), seed=SPLIT_SEED,
                             val_fraction=VAL_FRACTION, per_class=per_class))
    print(f"wrote {len(train)} train and {len(val)} val images to {args.output}")
    return 0


if __name__ == "__main__":
    run(main)
