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


def config_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("-c", "--config", required=True, help="YAML config file")
    parser.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. -o optimizer.lr=0.01 "
                             "(repeatable; values are YAML scalars)")
    return parser


def config_name(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _print_error(exc: BaseException) -> None:
    """Print ``exc`` as one ``error: ...`` paragraph and exit with status 2."""
    msg = textwrap.fill(str(exc), width=100, break_long_words=False, break_on_hyphens=False)
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def run(main: Callable[[Optional[List[str]]], int], argv: Optional[List[str]] = None) -> None:
    """Run ``main``; print a user error as one paragraph (no traceback) and exit with 2."""
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
