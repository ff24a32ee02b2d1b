"""Arrange the ILSVRC2012 validation images by class, using the devkit's labels.

    python tools/prepare_imagenet_val.py --val-dir ILSVRC2012_img_val \\
        --devkit ILSVRC2012_devkit_t12.tar.gz --output data/ILSVRC2012/val \\
        [--layout folders|list] [--link symlink|copy|move]

The devkit's ``data/ILSVRC2012_validation_ground_truth.txt`` gives, line i, the ILSVRC2012_ID
(1..1000) of ``ILSVRC2012_val_{i:08d}.JPEG``; ``data/meta.mat`` maps those IDs to WordNet IDs.
The ID order is *not* the sorted-WNID order that ``ImageFolder`` gives the ``train/<wnid>/``
folders, so labels are re-indexed here to the sorted-WNID order.

--layout folders (default): ``OUTPUT/<wnid>/ILSVRC2012_val_*.JPEG`` (a folder for every class,
    even one without images), for ``ImageFolder(root=OUTPUT)``.
--layout list: the images flat in ``OUTPUT/`` plus ``OUTPUT/val_list.txt`` (PaddleClas format,
    ``ILSVRC2012_val_00000001.JPEG 65``) and ``OUTPUT/class_names.txt`` (the sorted WNIDs, line
    i = label i), for ``ImageList(root=OUTPUT, list_file=OUTPUT/val_list.txt)``. With OUTPUT
    the same folder as --val-dir only the two text files are written.
--link: symlink (default; absolute links to --val-dir), copy, or move the images.

--devkit is the devkit folder (``ILSVRC2012_devkit_t12``) or its ``.tar.gz``. Reading meta.mat
needs scipy (``pip install scipy``). Safe to re-run or resume: images already in place are
skipped, every file appears under its final name only when complete, and nothing is changed
until all inputs have been checked.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from passl_mixer.data.imagenet_val import prepare  # noqa: E402
from passl_mixer.errors import PasslMixerError  # noqa: E402


def main(argv=None) -> int:
    first, _, rest = __doc__.strip().partition("\n")
    parser = argparse.ArgumentParser(description=first, epilog=rest.strip("\n"),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--val-dir", required=True,
                        help="folder with the ILSVRC2012_val_*.JPEG images")
    parser.add_argument("--devkit", required=True,
                        help="ILSVRC2012_devkit_t12 folder or ILSVRC2012_devkit_t12.tar.gz")
    parser.add_argument("--output", required=True, help="output folder (created if needed)")
    parser.add_argument("--layout", choices=("folders", "list"), default="folders",
                        help="folders: OUTPUT/<wnid>/*.JPEG; list: OUTPUT/val_list.txt "
                             "(default: folders)")
    parser.add_argument("--link", choices=("symlink", "copy", "move"), default="symlink",
                        help="how images get into OUTPUT (default: symlink)")
    args = parser.parse_args(argv)
    try:
        counts = prepare(args.val_dir, args.devkit, args.output, args.layout, args.link)
    except PasslMixerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{counts['images']} validation images in {counts['classes']} classes: "
          f"{counts['placed']} placed, {counts['skipped']} already in place, in {args.output} "
          f"({args.layout} layout).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
