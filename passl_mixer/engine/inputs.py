"""Pre-flight check of a run's input files: every missing one is named at once, before
anything (an output folder, a log, a model) is created.

The datasets and weight loaders check their own paths too, but one at a time and only when
they are built; on a machine without ImageNet the first command of the README should say in one
message which keys point nowhere and how to fix all of them.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..errors import ConfigError

#: the README section on dataset layouts and ImageNet (named in the message)
README_DATA = ('README.md, section "Data" (subsections "Layouts" and "ImageNet validation '
               'set")')
README_WEIGHTS = ('README.md, section "Published weights: convert, load, fine-tune, change '
                  'resolution"')

# dataset keys that name a folder or a file (ImageFolder, ImageList; MultiView nests another
# dataset under "dataset")
_FOLDER_KEYS = ("root",)
_FILE_KEYS = ("list_file", "class_names_file")


def _dataset_paths(cfg: Dict[str, Any], where: str, out: List[Tuple[str, str]]) -> None:
    for key, value in cfg.items():
        if key in _FOLDER_KEYS + _FILE_KEYS and isinstance(value, (str, os.PathLike)) and value:
            out.append((f"{where}.{key}", os.fspath(value)))
        elif isinstance(value, dict):
            _dataset_paths(value, f"{where}.{key}", out)


def input_paths(cfg: Dict[str, Any], splits: Sequence[str] = ("train", "val"),
                resume: Optional[str] = None) -> List[Tuple[str, str]]:
    """``(key, path)`` of every file or folder the run reads: the dataset roots and list files
    of ``data.<split>`` for each of ``splits``, ``weights``, ``model.pretrained`` and a
    ``--resume`` path (key ``--resume``; 'auto' is looked up later)."""
    paths: List[Tuple[str, str]] = []
    data = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
    for split in splits:
        section = data.get(split)
        if isinstance(section, dict) and isinstance(section.get("dataset"), dict):
            _dataset_paths(section["dataset"], f"data.{split}.dataset", paths)
    if isinstance(cfg.get("weights"), str) and cfg["weights"]:
        paths.append(("weights", cfg["weights"]))
    model = cfg.get("model") if isinstance(cfg.get("model"), dict) else {}
    pretrained = model.get("pretrained")
    if isinstance(pretrained, dict):
        if isinstance(pretrained.get("path"), str) and pretrained["path"]:
            paths.append(("model.pretrained.path", pretrained["path"]))
    elif isinstance(pretrained, str) and pretrained:
        paths.append(("model.pretrained", pretrained))
    if resume and resume != "auto":
        paths.append(("--resume", resume))
    return paths


def check_inputs(cfg: Dict[str, Any], splits: Sequence[str] = ("train", "val"),
                 resume: Optional[str] = None) -> None:
    """Raise one :class:`ConfigError` naming every input of :func:`input_paths` that does not
    exist: its key, the path as written and as resolved, the ``-o key=PATH`` fix and the README
    section to read. Paths that exist are left to the datasets and loaders, which say what is
    wrong with them (a file where a folder should be, an empty folder, ...)."""
    missing = [(key, path) for key, path in input_paths(cfg, splits, resume)
               if not os.path.exists(path)]
    if not missing:
        return
    cwd = os.getcwd()
    items = []
    for key, path in missing:
        resolved = os.path.abspath(path)
        shown = f"'{path}'" + ("" if os.path.isabs(path) else f" (resolved to '{resolved}')")
        items.append(f"{key} is {shown}, which does not exist")
    relative = any(not os.path.isabs(path) for _, path in missing)
    fixes = " ".join("--resume PATH" if key == "--resume" else f"-o {key}=PATH"
                     for key, _ in missing)
    read = []
    if any(key.startswith("data.") for key, _ in missing):
        read.append(f"for the dataset layouts and how to prepare ImageNet, read {README_DATA}")
    if any(key.startswith(("weights", "model.")) for key, _ in missing):
        read.append(f"for weights, read {README_WEIGHTS}")
    raise ConfigError(
        f"{len(missing)} input{'s are' if len(missing) > 1 else ' is'} missing, so nothing was "
        f"started and nothing was written: " + "; ".join(items) + "."
        + (f" Relative paths are resolved against the working directory, '{cwd}'."
           if relative else "")
        + f" Put the files there, or point the key{'s' if len(missing) > 1 else ''} at them: "
        f"{fixes}." + "".join(" " + "; ".join(r[0].upper() + r[1:] if i == 0 else r
                                              for i, r in enumerate(read)) + "." if read else ""))
