"""Console/file logging, VisualDL scalars and a progress line.

Only rank 0 writes files or prints progress; other ranks log warnings and errors only.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from typing import Dict, Optional

from . import ranks as dist
from .fileio import make_dir

LOGGER_NAME = "passl_mixer"


def setup_logging(output_dir: Optional[str] = None, filename: str = "train.log") -> logging.Logger:
    """Log INFO to stdout (rank 0) and to ``output_dir/filename``; other ranks log WARNING+."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    fmt = logging.Formatter("[%(asctime)s] %(message)s", datefmt="%Y-%m-%d %H:%M:%S")
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(fmt)
    console.setLevel(logging.INFO if dist.is_main() else logging.WARNING)
    logger.addHandler(console)
    if output_dir and dist.is_main():
        make_dir(output_dir)
        fh = logging.FileHandler(os.path.join(output_dir, filename), encoding="utf-8")
        fh.setFormatter(fmt)
        logger.addHandler(fh)
    return logger


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


class VisualDLWriter:
    """Scalars to VisualDL under ``log_dir`` (rank 0 only); a no-op when VisualDL is missing."""

    def __init__(self, log_dir: str):
        self.writer = None
        self.log_dir = log_dir
        if not dist.is_main():
            return
        try:
            from visualdl import LogWriter
        except ImportError:
            get_logger().warning("visualdl is not installed: no dashboard logs (pip install visualdl)")
            return
        self.writer = LogWriter(logdir=log_dir)

    def scalars(self, values: Dict[str, float], step: int, prefix: str = "") -> None:
        if self.writer is None:
            return
        for k, v in values.items():
            self.writer.add_scalar(tag=f"{prefix}{k}", value=float(v), step=int(step))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def format_eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{s:02d}"


class ProgressBar:
    """A one-line progress bar redrawn in place, shown only on a terminal (and on rank 0)."""

    def __init__(self, total: int, desc: str = "", stream=None):
        self.stream = stream or sys.stdout
        self.enabled = dist.is_main() and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.total, self.desc, self.start = total, desc, time.time()

    def update(self, done: int, extra: str = "") -> None:
        if not self.enabled:
            return
        frac = done / max(1, self.total)
        width = 24
        bar = "#" * int(frac * width) + "." * (width - int(frac * width))
        elapsed = time.time() - self.start
        eta = elapsed / frac - elapsed if frac > 0 else 0
        self.stream.write(f"\r{self.desc} [{bar}] {done}/{self.total} {extra} eta {format_eta(eta)}")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * 100 + "\r")
            self.stream.flush()
