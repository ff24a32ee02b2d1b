"""Unpack CIFAR-10 (the *binary* version) into PNG class folders for ImageFolder.

    python tools/cifar10_to_folders.py --src cifar-10-binary.tar.gz --output data/cifar10
    # -> data/cifar10/train/<class>/train_00000.png ... (50,000 images)
    #    data/cifar10/test/<class>/test_00000.png  ... (10,000 images)

Reads ``cifar-10-binary.tar.gz`` from https://www.cs.toronto.edu/~kriz/cifar.html (download it
yourself; nothing is fetched here). Its ``data_batch_{1..5}.bin`` and ``test_batch.bin`` hold
records of 1 label byte and 3,072 pixel bytes (the red, green, then blue 32x32 planes,
row-major); ``batches.meta.txt`` names the classes. The Python (pickled) version of the dataset
is deliberately not read. The output directory is written atomically: on any error it is
left as it was.
"""
import os
import sys
import tarfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Paddle's C++ (glog) warnings, e.g. PIR's "... not support input out tensor for now!!!!!", are
# not for users of this tool; GLOG_minloglevel=0 shows them again
os.environ.setdefault("GLOG_minloglevel", "2")

from passl_mixer.cli import run, tool_parser  # noqa: E402
from passl_mixer.errors import DataError  # noqa: E402
from passl_mixer.fileio import require_file  # noqa: E402

RECORD = 1 + 3 * 32 * 32
SPLITS = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}


def read_archive(src: str):
    """{member base name: bytes} of the batch files and the class list of the archive."""
    wanted = {name for names in SPLITS.values() for name in names} | {"batches.meta.txt"}
    require_file(src, "--src", DataError, "cifar-10-binary.tar.gz (the CIFAR-10 binary version)",
                 inside=("cifar-10-binary.tar.gz",), nonempty=True)
    found = {}
    try:
        with tarfile.open(src, "r:gz") as tar:
            for member in tar:
                name = os.path.basename(member.name)
                if member.isfile() and name in wanted:
                    found[name] = tar.extractfile(member).read()
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise DataError(f"Cannot read '{src}' as cifar-10-binary.tar.gz: {exc}.") from None
    missing = sorted(wanted - set(found))
    if missing:
        raise DataError(f"'{src}' lacks {', '.join(missing)}; expected the CIFAR-10 binary "
                        f"version (cifar-10-binary.tar.gz), not the Python or MATLAB one.")
    classes = [line.strip() for line in found.pop("batches.meta.txt").decode().splitlines()
               if line.strip()]
    return found, classes


def write_split(batches, classes, split: str, root: str) -> int:
    from PIL import Image

    for name in classes:
        os.makedirs(os.path.join(root, split, name), exist_ok=True)
    index = 0
    for batch in SPLITS[split]:
        data = batches[batch]
        if len(data) % RECORD:
            raise DataError(f"{batch} is {len(data)} bytes, not a multiple of {RECORD}: truncated?")
        records = np.frombuffer(data, np.uint8).reshape(-1, RECORD)
        images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        for label, image in zip(records[:, 0], images):
            if label >= len(classes):
                raise DataError(f"{batch}: label {label} but only {len(classes)} classes.")
            path = os.path.join(root, split, classes[label], f"{split}_{index:05d}.png")
            Image.fromarray(image).save(path)
            index += 1
    return index


def main(argv=None):
    parser = tool_parser(__doc__)
    parser.add_argument("--src", required=True, help="cifar-10-binary.tar.gz")
    parser.add_argument("--output", required=True, help="output directory (replaced as a whole)")
    args = parser.parse_args(argv)

    from passl_mixer.fileio import atomic_dir

    batches, classes = read_archive(args.src)
    with atomic_dir(args.output) as tmp:
        counts = {split: write_split(batches, classes, split, tmp) for split in SPLITS}
    print(f"wrote {counts['train']} training and {counts['test']} test images in "
          f"{len(classes)} class folders under {args.output}/train and {args.output}/test")
    return 0


if __name__ == "__main__":
    run(main)
