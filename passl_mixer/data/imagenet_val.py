"""ILSVRC2012 validation images arranged by class, from the devkit's labels (the work behind
``tools/prepare_imagenet_val.py``, whose docstring and the README describe the layouts).

The devkit's ``data/ILSVRC2012_validation_ground_truth.txt`` gives, line i, the ILSVRC2012_ID
(1..1000) of ``ILSVRC2012_val_{i:08d}.JPEG``; ``data/meta.mat`` maps those IDs to WordNet IDs.
The ID order is *not* the sorted-WNID order that ``ImageFolder`` gives the ``train/<wnid>/``
folders, so labels are re-indexed to the sorted-WNID order. Reading meta.mat needs scipy.
Error messages name the paths by the tool's options (``--val-dir``, ``--devkit``, ``--output``).
"""
from __future__ import annotations

import errno
import fnmatch
import io
import os
import shutil
import tarfile
from typing import Dict, List, Tuple

from ..errors import DataError
from ..fileio import make_dir, require_dir, write_error, write_text

GROUND_TRUTH = "data/ILSVRC2012_validation_ground_truth.txt"
META = "data/meta.mat"
IMAGE_NAME = "ILSVRC2012_val_{:08d}.JPEG"
IMAGE_PATTERN = "ILSVRC2012_val_*.JPEG"
LIST_FILE = "val_list.txt"
CLASS_NAMES_FILE = "class_names.txt"


def read_devkit(devkit: str) -> Tuple[io.BytesIO, str]:
    """(meta.mat as a file object, ground-truth text) from a devkit folder or tarball."""
    wanted = (META, GROUND_TRUTH)
    if os.path.isdir(devkit):
        found = {}
        for rel in wanted:
            # Accept the devkit folder or its data/ subfolder.
            candidates = (os.path.join(devkit, rel), os.path.join(devkit, os.path.basename(rel)))
            for candidate in candidates:
                if os.path.isfile(candidate):
                    with open(candidate, "rb") as f:
                        found[rel] = f.read()
                    break
    elif os.path.isfile(devkit) and tarfile.is_tarfile(devkit):
        found = {}
        with tarfile.open(devkit) as tar:
            for member in tar.getmembers():
                for rel in wanted:
                    if member.isfile() and (member.name == rel or member.name.endswith("/" + rel)):
                        found[rel] = tar.extractfile(member).read()
    else:
        raise DataError(f"--devkit '{devkit}' is neither a folder nor a tar archive; expected the "
                        f"ILSVRC2012_devkit_t12 folder or ILSVRC2012_devkit_t12.tar.gz.")
    missing = [rel for rel in wanted if rel not in found]
    if missing:
        raise DataError(f"The devkit '{devkit}' lacks {', '.join(missing)}; expected the "
                        f"ILSVRC2012 (t12) devkit, which has both.")
    return io.BytesIO(found[META]), found[GROUND_TRUTH].decode("ascii", errors="replace")


def load_id_to_wnid(meta_file, source: str) -> Dict[int, str]:
    """ILSVRC2012_ID -> WNID for the leaf synsets (the classes) in meta.mat."""
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DataError("Reading the devkit's data/meta.mat needs scipy, which is not "
                        "installed: pip install scipy") from None
    try:
        synsets = loadmat(meta_file, squeeze_me=True)["synsets"]
        synsets = synsets.reshape(-1)
        leaves = synsets[synsets["num_children"] == 0]
        return {int(i): str(w) for i, w in zip(leaves["ILSVRC2012_ID"], leaves["WNID"])}
    except (KeyError, ValueError, TypeError) as exc:
        raise DataError(f"{source} is not a devkit meta.mat with a 'synsets' struct (fields "
                        f"ILSVRC2012_ID, WNID, num_children): {exc}") from None


def parse_ground_truth(text: str, id_to_wnid: Dict[int, str]) -> List[str]:
    """The WNID of each validation image, in image order."""
    wnids = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            wnids.append(id_to_wnid[int(line)])
        except (ValueError, KeyError):
            raise DataError(f"{GROUND_TRUTH}:{lineno}: {line.strip()!r} is not the "
                            f"ILSVRC2012_ID of a class in {META} (expected 1.."
                            f"{len(id_to_wnid)}).") from None
    if not wnids:
        raise DataError(f"The devkit's {GROUND_TRUTH} is empty.")
    return wnids


def plan(val_dir: str, output: str, layout: str, wnids: List[str]) -> List[Tuple[str, str]]:
    """(source, destination) for every image; checks first that each one can be placed."""
    names = [IMAGE_NAME.format(i + 1) for i in range(len(wnids))]
    jobs = [(os.path.join(val_dir, name),
             os.path.join(output, wnid, name) if layout == "folders" else
             os.path.join(output, name)) for name, wnid in zip(names, wnids)]
    in_val_dir = set(fnmatch.filter(os.listdir(val_dir), IMAGE_PATTERN))
    extra = sorted(in_val_dir - set(names))
    if extra:
        raise DataError(f"--val-dir '{val_dir}' has {len(extra)} images the devkit's ground truth "
                        f"(listing {len(names)}) does not, e.g. {', '.join(extra[:3])}. Is the "
                        f"devkit the ILSVRC2012 one that matches these images?")
    missing = [os.path.basename(src) for src, dst in jobs
               if os.path.basename(src) not in in_val_dir and not os.path.exists(dst)]
    if missing:
        raise DataError(f"The devkit's ground truth lists {len(names)} validation images, but "
                        f"{len(missing)} of them are neither in --val-dir '{val_dir}' (which has "
                        f"{len(in_val_dir)}) nor already in --output '{output}', e.g. "
                        f"{', '.join(missing[:3])}.")
    return jobs


def place(src: str, dst: str, link: str) -> bool:
    """Put ``src`` at ``dst``; False if ``dst`` already exists (done by an earlier run)."""
    if os.path.exists(dst):
        return False
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    tmp = dst + ".tmp"  # not an image extension, so a leftover is never read as a sample
    if os.path.lexists(tmp):
        os.remove(tmp)
    if link == "move":
        try:
            os.replace(src, dst)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            shutil.copyfile(src, tmp)  # another filesystem: copy, then remove the source
            os.replace(tmp, dst)
            os.remove(src)
        return True
    if link == "symlink":
        os.symlink(os.path.abspath(src), tmp)
    else:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)  # also replaces a broken symlink left at dst
    return True


def prepare(val_dir: str, devkit: str, output: str, layout: str = "folders",
            link: str = "symlink") -> Dict[str, int]:
    """Do the work; returns counts: images, placed (now), skipped (already there), classes."""
    require_dir(val_dir, "--val-dir", DataError,
                "the folder of the 50,000 ILSVRC2012_val_*.JPEG images")
    require_dir(output, "--output", DataError, "a folder to arrange the images in",
                must_exist=False)
    meta_file, ground_truth = read_devkit(devkit)
    id_to_wnid = load_id_to_wnid(meta_file, f"{devkit}: {META}")
    wnids = parse_ground_truth(ground_truth, id_to_wnid)
    classes = sorted(id_to_wnid.values())
    jobs = plan(val_dir, output, layout, wnids)

    make_dir(output, "--output")
    if layout == "folders":
        for wnid in classes:  # every class gets a folder so labels match train/
            make_dir(os.path.join(output, wnid), "class folder")
    placed = 0
    for src, dst in jobs:
        try:
            placed += place(src, dst, link)
        except OSError as exc:  # disk full, ...: what is in place stays; a re-run resumes
            if os.path.lexists(dst + ".tmp"):
                os.remove(dst + ".tmp")
            err = write_error(dst, exc, kept=False)
            err.args = (f"{err} The {placed} images placed before it stay; run again to "
                        f"finish.",)
            raise err from None
    if layout == "list":
        label = {wnid: i for i, wnid in enumerate(classes)}
        write_text(os.path.join(output, CLASS_NAMES_FILE), "".join(w + "\n" for w in classes))
        write_text(os.path.join(output, LIST_FILE),
                   "".join(f"{os.path.basename(dst)} {label[w]}\n"
                           for (_, dst), w in zip(jobs, wnids)))
    return dict(images=len(jobs), placed=placed, skipped=len(jobs) - placed,
                classes=len(classes))
