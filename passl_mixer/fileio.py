"""Atomic file and directory writes: a kill at any moment leaves the old file or the new one.

Everything this package writes for the user (configs, checkpoints, metrics, exported models)
goes through these helpers, so an interrupted write never leaves a half-written file behind.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile


@contextlib.contextmanager
def atomic_path(path: str):
    """Yield a temporary path beside ``path``; on success it is fsync'ed and renamed onto ``path``.

    On an exception the temporary file is removed and ``path`` is untouched.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path: str, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def link_or_copy(src: str, dst: str) -> None:
    """Make ``dst`` a hard link to ``src`` (no copy of the data), or a copy where the file
    system has no hard links; either way ``dst`` appears complete or not at all."""
    directory = os.path.dirname(os.path.abspath(dst))
    tmp = os.path.join(directory, f".{os.path.basename(dst)}.{os.getpid()}.link.tmp")
    try:
        os.link(src, tmp)
    except OSError:
        with atomic_path(dst) as copy_tmp:
            shutil.copyfile(src, copy_tmp)
        return
    os.replace(tmp, dst)


@contextlib.contextmanager
def atomic_dir(path: str):
    """Yield a fresh temporary directory; on success it replaces the directory ``path``.

    The old ``path`` (if any) is moved aside, the new one renamed in, and only then the old one
    deleted; an exception removes the temporary directory and leaves ``path`` as it was.
    """
    parent = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the result is a normal directory
    try:
        yield tmp
        old = None
        if os.path.exists(path):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".old", dir=parent)
            os.rmdir(old)
            os.replace(path, old)
        os.replace(tmp, path)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
