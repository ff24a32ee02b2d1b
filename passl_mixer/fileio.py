"""Files in and out: checked user paths, and atomic writes that fail cleanly.

Reading: every path a user gives (a config, weights, a list file, a dataset root, a model
directory) is checked with :func:`require_file` / :func:`require_dir` (or read with
:func:`read_text`) before it is opened, so a missing path, a directory where a file belongs
(or the reverse), a binary file where text belongs or an empty file is one sentence naming the
path and what was expected — never a traceback from the code that opened it.

Writing: everything this package writes for the user (configs, checkpoints, metrics, converted
weights, exported models) goes through :func:`atomic_path`, :func:`write_text`,
:func:`link_or_copy` or :func:`atomic_dir`: a kill at any moment leaves the old file or the new
one, never a half-written one. When the write itself fails (disk full, a file-size limit, a
read-only file system, a regular file where a folder must be) they raise a
:class:`~passl_mixer.errors.WriteError` naming the destination and the OS's reason; the previous
file is unchanged and no temporary file is left behind. :func:`make_dir` creates an output
directory with the same kind of error.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from typing import Iterable, Optional, Type, Union

try:
    import resource
except ImportError:  # not on Windows
    resource = None

from .errors import PasslMixerError, WriteError

# -- what a file holds -----------------------------------------------------------------------
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"PK\x03\x04", "a zip archive (e.g. a NumPy .npz)"),
    (b"PK\x05\x06", "an empty zip archive"),
    (b"\x1f\x8b", "a gzip file"),
    (b"%PDF", "a PDF document"),
    (b"\x7fELF", "an executable"),
)


def file_kind(head: bytes) -> Optional[str]:
    """What a file whose first bytes are ``head`` (16 or more) is, for error messages — e.g.
    'a PNG image', 'a Python pickle (e.g. a .pdparams or .pdckpt checkpoint)' — or None when
    the bytes do not tell."""
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "a WebP image"
    if head[:2] == b"BM" and len(head) >= 14 and int.from_bytes(head[2:6], "little") > 14 \
            and head[6:10] == b"\x00\x00\x00\x00":
        return "a BMP image"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "a Python pickle (e.g. a .pdparams or .pdckpt checkpoint)"
    if len(head) >= 10 and head[8:10] in (b'{"', b"{}") and \
            0 < int.from_bytes(head[:8], "little") < 100_000_000:
        return "a safetensors file"
    return None


def describe_file(path: str) -> str:
    """A short phrase saying what ``path`` holds ('a PNG image', 'a text file starting
    "model:..."', 'an empty file (0 bytes)', 'a 4096-byte binary file'), for messages about a
    file that is not what it was given as."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if size == 0:
        return "an empty file (0 bytes)"
    kind = file_kind(head)
    if kind:
        return kind
    if b"\x00" not in head:
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError as exc:
            text = head[:exc.start].decode("utf-8") if exc.start >= 8 else None
        if text is not None:
            first = text.strip().splitlines()[0] if text.strip() else ""
            return f"a text file starting {first[:40]!r}" if first else "a blank text file"
    return f"a {size:,}-byte binary file"


# -- checked user paths -----------------------------------------------------------------------
def _path_text(path, what: str, error: Type[PasslMixerError], expected: str) -> str:
    if not isinstance(path, (str, os.PathLike)) or isinstance(path, bool):
        raise error(f"{what} must be a path, got {path!r} ({type(path).__name__}); expected "
                    f"{expected}.")
    path = os.fspath(path)
    if not path.strip():
        raise error(f"{what} is an empty path; expected {expected}.")
    return path


def _missing(path: str, what: str, error: Type[PasslMixerError], expected: str):
    if os.path.islink(path):
        return error(f"{what} '{path}' is a broken symbolic link (to '{os.readlink(path)}'); "
                     f"expected {expected}.")
    blocker = _not_a_dir(os.path.dirname(os.path.abspath(path)))
    if blocker:
        return error(f"{what} '{path}' does not exist: '{blocker}' is "
                     f"{describe_file(blocker)}, not a directory; expected {expected}.")
    return error(f"{what} '{path}' does not exist; expected {expected}.")


def require_file(path, what: str, error: Type[PasslMixerError] = PasslMixerError,
                 expected: str = "a file", inside: Iterable[str] = (),
                 nonempty: bool = False) -> str:
    """Return ``path`` (as a str) if it is an existing, readable regular file, else raise
    ``error`` with one sentence naming ``what`` (e.g. "Config file", "--weights"), the path,
    what is wrong and ``expected`` (e.g. "a YAML config file").

    ``inside``: file names to look for when ``path`` is a directory, suggested in the message
    (e.g. ``('model.pdparams',)`` for a conversion's output folder). ``nonempty``: a 0-byte file
    is an error too (binary formats, which are never empty).
    """
    path = _path_text(path, what, error, expected)
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise _missing(path, what, error, expected) from None
    except OSError as exc:
        raise error(f"{what} '{path}' cannot be accessed ({exc.strerror or exc}); expected "
                    f"{expected}.") from None
    if stat.S_ISDIR(st.st_mode):
        found = [os.path.join(path, name) for name in inside
                 if os.path.isfile(os.path.join(path, name))]
        hint = f" It holds '{found[0]}': did you mean that file?" if found else ""
        raise error(f"{what} '{path}' is a directory; expected {expected}.{hint}")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what} '{path}' is not a regular file (a device, pipe or socket); "
                    f"expected {expected}.")
    if not os.access(path, os.R_OK):
        raise error(f"{what} '{path}' cannot be read (permission denied); expected {expected}.")
    if nonempty and st.st_size == 0:
        raise error(f"{what} '{path}' is empty (0 bytes); expected {expected}. Was it cut short "
                    f"by a failed copy or download?")
    return path


def require_dir(path, what: str, error: Type[PasslMixerError] = PasslMixerError,
                expected: str = "a folder", must_exist: bool = True) -> bool:
    """Check that ``path`` is an existing directory, else raise ``error`` with one sentence
    naming ``what``, the path, what is wrong and ``expected``. With ``must_exist=False`` a
    missing path is fine (returns False: an output directory still to be created), but an
    existing file is still an error. Returns True when the directory exists."""
    path = _path_text(path, what, error, expected)
    if os.path.isdir(path):
        return True
    if not os.path.lexists(path):
        if not must_exist:
            blocker = _not_a_dir(path)
            if blocker:
                raise error(f"{what} '{path}' cannot be created: '{blocker}' is "
                            f"{describe_file(blocker)}, not a directory; expected {expected}.")
            return False
        raise _missing(path, what, error, expected)
    if os.path.islink(path) and not os.path.exists(path):
        raise _missing(path, what, error, expected)
    raise error(f"{what} '{path}' is {describe_file(path) if os.path.isfile(path) else 'a file'}"
                f", not a directory; expected {expected}.")


def read_text(path, what: str, error: Type[PasslMixerError] = PasslMixerError,
              expected: str = "a UTF-8 text file", inside: Iterable[str] = ()) -> str:
    """The text of ``path`` (UTF-8; a leading BOM is dropped), checked with
    :func:`require_file`; a binary file (an image, a checkpoint, ...) or text that is not
    UTF-8 is an ``error`` naming the file, what it looks like and ``expected``."""
    path = require_file(path, what, error, expected, inside)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise error(f"{what} '{path}' cannot be read ({exc.strerror or exc}); expected "
                    f"{expected}.") from None
    kind = file_kind(data[:64])
    if kind is None and b"\x00" in data[:4096]:
        kind = "a binary file"
    if kind is None:
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            sample = data[:4096].decode("utf-8", errors="replace")
            odd = sum(ch == "\ufffd" or (ch < " " and ch not in "\t\n\r\f") for ch in sample)
            if odd * 10 > len(sample):
                kind = "a binary file"
            else:
                line = data[:exc.start].count(b"\n") + 1
                raise error(f"{what} '{path}' is not UTF-8 text (line {line} has the byte "
                            f"0x{data[exc.start]:02x}); expected {expected}. Save it as "
                            f"UTF-8.") from None
    raise error(f"{what} '{path}' is {kind}, not text; expected {expected}.")


# -- writing ----------------------------------------------------------------------------------
def _not_a_dir(path: str) -> Optional[str]:
    """The nearest existing one of ``path`` and its ancestors if it is not a directory (so
    ``path`` cannot be a directory), else None."""
    path = os.path.abspath(path)
    while not os.path.lexists(path):
        up = os.path.dirname(path)
        if up == path:
            return None
        path = up
    return None if os.path.isdir(path) else path


_HINTS = {
    errno.ENOSPC: "the disk is full; free some space and run again",
    errno.EDQUOT: "the disk quota is used up; free some space and run again",
    errno.EFBIG: "the file would exceed the file-size limit (ulimit -f) or the largest file "
                 "the file system takes",
    errno.EROFS: "the file system is read-only; choose a writable location",
    errno.EACCES: "no permission to write there; choose a writable location",
    errno.EPERM: "no permission to write there; choose a writable location",
}


def os_reason(exc: BaseException) -> str:
    """The OS's reason in ``exc`` as a short phrase, e.g. 'File too large [EFBIG]: the file
    would exceed the file-size limit (ulimit -f) ...'."""
    if isinstance(exc, OSError) and exc.errno:
        code = errno.errorcode.get(exc.errno, str(exc.errno))
        reason = f"{exc.strerror or os.strerror(exc.errno)} [{code}]"
        hint = _HINTS.get(exc.errno)
        return f"{reason}: {hint}" if hint else reason
    return str(exc) or type(exc).__name__


def write_error(path: str, exc: BaseException, action: str = "write",
                what: Optional[str] = None, kept: Union[bool, str] = True) -> WriteError:
    """A :class:`WriteError` for failing to ``action`` (write / create) ``path``, giving the
    OS's reason from ``exc``; ``kept`` (True, or the path kept when it is not ``path``) adds
    that the previous file or folder is unchanged."""
    reason = exc.reason if isinstance(exc, WriteError) else os_reason(exc)
    name = f"{what} '{path}'" if what else f"'{path}'"
    kept_name = os.path.basename(os.path.normpath(kept if isinstance(kept, str) else path))
    tail = (f" Nothing was replaced: the previous '{kept_name}' (if any) is unchanged and no "
            f"temporary file was left." if kept else "")
    err = WriteError(f"Cannot {action} {name}: {reason}.{tail}")
    err.path, err.reason, err.action, err.what = path, reason, action, what
    err.errno = getattr(exc, "errno", None)
    return err


def short_write_reason(path: str) -> str:
    """Why a file may have come out shorter than written when the writer (C++ code) did not
    say: the process's file-size limit, a full file system, or else a guess."""
    try:
        size = os.path.getsize(path)
        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0] if resource else -1
        if soft not in (-1, getattr(resource, "RLIM_INFINITY", -1)) and size >= soft:
            return f"it stopped at {size:,} bytes, this process's file-size limit (ulimit -f)"
        fs = os.statvfs(os.path.dirname(os.path.abspath(path)))
        if fs.f_bavail * fs.f_frsize < 1 << 20:
            return _HINTS[errno.ENOSPC]
    except (OSError, AttributeError):  # os.statvfs: not on Windows
        pass
    return "the write did not complete (is the disk full?)"


def make_dir(path: str, what: str = "output directory") -> str:
    """Create directory ``path`` (and its parents) unless it exists; return ``path``.

    Raises a :class:`WriteError` naming ``what`` (e.g. "train.output_dir"), the path and the
    reason when it cannot be created: a regular file of that name or a parent that is a file,
    a read-only or full file system, no permission.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        return path
    problem = _dir_problem(path)
    if problem:
        raise WriteError(f"Cannot create {what} '{path}': {problem}.")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise write_error(path, exc, "create", what, kept=False) from None
    return path


def _dir_problem(path: str) -> Optional[str]:
    """Why directory ``path`` cannot be created, when a file is in the way; else None."""
    blocker = _not_a_dir(path)
    if blocker is None:
        return None
    if os.path.abspath(blocker) == os.path.abspath(path):
        return (f"it exists and is {describe_file(blocker)}; expected a directory (or a path "
                f"that does not exist yet)")
    return f"'{blocker}' is {describe_file(blocker)}, not a directory"


def _make_parent(path: str, what: Optional[str]) -> str:
    """Create the folder ``path`` is to be written into, or raise a WriteError about ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(directory):
        return directory
    name = f"{what} '{path}'" if what else f"'{path}'"
    blocker = _not_a_dir(directory)
    if blocker:
        raise WriteError(f"Cannot write {name}: '{blocker}' is {describe_file(blocker)}, not a "
                         f"directory.")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise write_error(path, exc, what=what, kept=False) from None
    return directory


def _remove_quietly(path: str) -> None:
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            os.remove(path)
    except OSError:
        pass


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux reports it
    in /proc; elsewhere it is set and restored at once, which another thread could observe)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


@contextlib.contextmanager
def atomic_path(path: str, what: Optional[str] = None):
    """Yield a temporary path beside ``path``; on success it is fsync'ed and renamed onto ``path``.

    On an exception the temporary file is removed and ``path`` is untouched; an ``OSError``
    (disk full, file-size limit, read-only, ...) becomes a :class:`WriteError` naming ``path``
    (``what`` says what it is, e.g. "checkpoint").
    """
    directory = _make_parent(path, what)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                                   dir=directory)
        os.close(fd)
        # mkstemp makes the file private (0600); the result is an ordinary file, readable by
        # whom the user's umask allows (weights shared with another user or container uid)
        os.chmod(tmp, 0o666 & ~current_umask())
    except OSError as exc:
        raise write_error(path, exc, what=what) from None
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except WriteError as exc:  # a nested writer: report it as a failure to write ``path``
        raise write_error(path, exc, what=what) from None
    except PasslMixerError:
        raise
    except OSError as exc:
        raise write_error(path, exc, what=what) from None
    finally:
        _remove_quietly(tmp)


def write_text(path: str, text: str, what: Optional[str] = None) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path, what) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def link_or_copy(src: str, dst: str, what: Optional[str] = None) -> None:
    """Make ``dst`` a hard link to ``src`` (no copy of the data), or a copy where the file
    system has no hard links; either way ``dst`` appears complete or not at all."""
    directory = os.path.dirname(os.path.abspath(dst))
    tmp = os.path.join(directory, f".{os.path.basename(dst)}.{os.getpid()}.link.tmp")
    _remove_quietly(tmp)  # left by a killed process that had this pid
    try:
        os.link(src, tmp)
    except OSError:
        with atomic_path(dst, what) as copy_tmp:
            shutil.copyfile(src, copy_tmp)
        return
    try:
        os.replace(tmp, dst)
    except OSError as exc:
        _remove_quietly(tmp)
        raise write_error(dst, exc, what=what) from None


@contextlib.contextmanager
def atomic_dir(path: str, what: Optional[str] = None):
    """Yield a fresh temporary directory; on success it replaces the directory ``path``.

    The old ``path`` (if any) is moved aside, the new one renamed in, and only then the old one
    deleted; an exception removes the temporary directory and leaves ``path`` as it was. An
    ``OSError`` while writing (disk full, ...) becomes a :class:`WriteError` naming the file
    under ``path`` that could not be written.
    """
    parent = _make_parent(path, what)
    try:
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise write_error(path, exc, what=what) from None
    try:
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes it private; the result is a normal directory
        yield tmp
        old = None
        if os.path.exists(path):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".old", dir=parent)
            os.rmdir(old)
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except OSError:
            if old:
                os.replace(old, path)  # put the previous one back
            raise
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except PasslMixerError as exc:
        if isinstance(exc, WriteError) and getattr(exc, "path", None):
            raise write_error(_outside(exc.path, tmp, path), exc, what=what,
                              kept=path) from None
        raise
    except OSError as exc:
        where = _outside(exc.filename, tmp, path) if isinstance(exc.filename, str) else path
        raise write_error(where, exc, what=what, kept=path) from None
    finally:
        _remove_quietly(tmp)


def _outside(name: str, tmp: str, path: str) -> str:
    """``name`` under the temporary directory ``tmp``, renamed to where it will be under
    ``path``; ``path`` itself for a name elsewhere."""
    rel = os.path.relpath(os.path.abspath(name), tmp)
    if rel == "." or rel.startswith(os.pardir):
        return path
    base = os.path.basename(rel)
    if base.startswith(".") and base.endswith(".tmp"):  # an atomic_path temp file
        return path
    return os.path.join(path, rel)
