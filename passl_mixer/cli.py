"""Shared command-line plumbing for tools/*.py: ``-c``/``-o`` parsing and error reporting."""
from __future__ import annotations

import argparse
import errno
import os
import sys
import textwrap
from typing import Callable, List, Optional

from .errors import PasslMixerError

# OS errors that only ever mean "the disk (or the location) cannot take the write": reported
# like a WriteError even when they come from code outside fileio's writers (a logger, VisualDL)
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


def tool_parser(doc: str, **kwargs) -> argparse.ArgumentParser:
    """An ArgumentParser whose description is ``doc``'s first line and whose ``--help`` ends
    with the rest of ``doc`` (the usage examples) as written."""
    first, _, rest = doc.strip().partition("\n")
    return argparse.ArgumentParser(description=first, epilog=rest.strip("\n") or None,
                                   formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)


def add_threads_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU math threads (default: OMP_NUM_THREADS if set, else the cores "
                             "available to this process, shared among the processes of a "
                             "distributed launch)")


def config_parser(description: str) -> argparse.ArgumentParser:
    """The parser of a config-driven tool: ``-c``, ``-o`` and ``--threads``. ``description``
    may be the tool's whole docstring: its lines after the first become the ``--help`` epilog
    (as they do when ``description`` is the first line of the running script's docstring)."""
    script_doc = getattr(sys.modules.get("__main__"), "__doc__", None) or ""
    if "\n" not in description.strip() and script_doc.strip().startswith(description.strip()):
        description = script_doc
    parser = tool_parser(description)
    parser.add_argument("-c", "--config", required=True, help="YAML config file")
    parser.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. -o optimizer.lr=0.01 "
                             "(repeatable; values are YAML scalars)")
    add_threads_arg(parser)
    return parser


def default_threads() -> Optional[int]:
    """The math threads a tool uses unless ``--threads`` says otherwise: None when the process
    was started with OMP_NUM_THREADS (OpenMP already follows it), else this process's share of
    the cores it may run on (a launcher starting several per machine sets PADDLE_LOCAL_SIZE)."""
    import passl_mixer

    if passl_mixer._OMP_NUM_THREADS_AT_START:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        procs = max(1, int(os.environ.get("PADDLE_LOCAL_SIZE", "1") or 1))
    except ValueError:
        procs = 1
    return max(1, (cores or 1) // procs)


_threads_set: Optional[int] = None


def current_threads() -> int:
    """The CPU math threads of this process: as :func:`set_threads` set them, else as the
    process's OMP_NUM_THREADS at start had them, else Paddle's default of one."""
    import passl_mixer

    if _threads_set is not None:
        return _threads_set
    try:
        return max(1, int(passl_mixer._OMP_NUM_THREADS_AT_START or 1))
    except ValueError:
        return 1


def set_threads(threads: Optional[int] = None) -> Optional[int]:
    """Set Paddle's CPU math threads in this process (``paddle.base.core.set_num_threads``)
    instead of exporting OMP_NUM_THREADS, whose value above 1 makes Paddle's import print a
    multi-line warning. ``None``: :func:`default_threads`. Returns the number set (None: left
    as OMP_NUM_THREADS has it). For command-line tools; the library never calls it."""
    if threads is None:
        threads = default_threads()
    if threads is None:
        return None
    import paddle

    setter = getattr(paddle.base.core, "set_num_threads", None)
    if setter is None:  # not in this Paddle: leave the default
        return None
    global _threads_set
    _threads_set = max(1, int(threads))
    setter(_threads_set)
    from . import cpu_kernels  # the fused kernels' OpenMP runtime is not Paddle's

    cpu_kernels.threads = _threads_set
    return _threads_set


def _threads_from_argv(argv: Optional[List[str]]) -> Optional[int]:
    pre = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    pre.add_argument("--threads", type=int, default=None)
    try:
        known, _ = pre.parse_known_args(sys.argv[1:] if argv is None else argv)
    except (argparse.ArgumentError, SystemExit):  # a bad value: the tool's parser reports it
        return None
    return known.threads if known.threads and known.threads > 0 else None


def config_name(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _print_error(exc: BaseException) -> None:
    """Print ``exc`` as one ``error: ...`` paragraph and exit with status 2."""
    msg = textwrap.fill(str(exc), width=100, break_long_words=False, break_on_hyphens=False)
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def _quiet_launcher_termination() -> None:
    """Under ``paddle.distributed.launch``, when one rank exits (say with a clear data error),
    the launcher ends the others with SIGTERM. Paddle's fatal-signal handler, installed when
    Paddle is imported, would then print a C++ "Termination signal" stack for a process that
    merely lost the race to exit, burying the one message that matters. Restore the default
    action: the process ends at once, silently (files are written atomically, so nothing is
    left half-written)."""
    from .ranks import world_size

    if world_size() > 1:
        import importlib
        import signal

        importlib.import_module("paddle")  # its import installs the handler replaced here
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def run(main: Callable[[Optional[List[str]]], int], argv: Optional[List[str]] = None,
        keep_freed_memory: bool = False) -> None:
    """Run ``main``; print a user error as one paragraph (no traceback) and exit with 2.
    Paddle's CPU math threads are set first (``--threads N`` in the arguments, else
    :func:`default_threads`). ``keep_freed_memory``: the process keeps the memory it frees for
    reuse (:func:`passl_mixer.inference.keep_freed_memory`): dygraph allocates every op's
    output afresh, and a training step then no longer page-faults its large activations and
    gradients into existence anew each time (see the README, "Speed on this 2-core CPU")."""
    set_threads(_threads_from_argv(argv))
    if keep_freed_memory:
        from .inference import keep_freed_memory as keep
        keep()
    _quiet_launcher_termination()
    try:
        code = main(argv)
    except PasslMixerError as exc:
        _print_error(exc)
    except OSError as exc:
        if exc.errno not in _WRITE_ERRNOS:
            raise
        from .fileio import write_error
        _print_error(write_error(exc.filename or "a file", exc, kept=False))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
