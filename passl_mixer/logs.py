"""The package's one logging module: the console/file log (one format for every tool), the
training loop's sinks (VisualDL scalars, metrics.json) and a progress line.

Only rank 0 writes files or prints progress; other ranks log warnings and errors only.

Sinks receive the numbers a run produces: ``train.loggers`` names them (``{name: ...}`` looked
up in :data:`~passl_mixer.registry.LOGGERS`, default VisualDL and MetricsJson); a plugin adds
its own (TensorBoard, W&B) by registering a :class:`Sink` subclass. The console is not a sink:
it is the Python logger below, which every tool (evaluation, export, prediction) writes its
text lines, warnings and errors to, not only the trainer, in one format to stdout and
train.log; making it a sink would split that one log into two.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, Dict, List, Optional

from . import ranks as dist
from .fileio import make_dir, write_text
from .registry import LOGGERS

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


class Sink:
    """Where the training loop's numbers go. The trainer builds each ``train.loggers`` entry
    with ``output_dir`` (the run's folder) injected and calls it on every rank at fixed points;
    a sink that writes files does so on rank 0 only (:func:`passl_mixer.ranks.is_main`).
    Subclass it and override what applies; every method is a no-op here."""

    def begin(self, history: List[Dict[str, Any]]) -> None:
        """Once before training: the evaluation records so far (a resumed run's from its
        checkpoint; empty for a new run)."""

    def scalars(self, step: int, values: Dict[str, float]) -> None:
        """Tagged numbers at optimizer step ``step``: ``train/loss``, ``train/train_acc1``,
        ``train/lr``, ``train/img_per_s`` every ``train.log_interval`` updates, and ``val/top1``,
        ``val/top5``, ``val/loss`` (``val/ema_top1``, ``val/ema_top5`` with EMA) per evaluation
        (averaged over the ranks)."""

    def evaluation(self, record: Dict[str, Any]) -> None:
        """One per evaluation: ``{epoch, step, top1, top5, loss, num_samples, ...}``."""

    def close(self) -> None:
        """At the end of training."""


@LOGGERS.register()
class VisualDL(Sink):
    """Scalars to VisualDL under ``output_dir/vdl`` (rank 0 only); a no-op when VisualDL is
    missing. (The file names are fixed: ``--overwrite`` moves a run's ``vdl/`` and
    ``metrics.json`` aside by name.)"""

    def __init__(self, output_dir: str):
        self.writer = None
        self.log_dir = os.path.join(output_dir, "vdl")
        if not dist.is_main():
            return
        try:
            from visualdl import LogWriter
        except ImportError:
            get_logger().warning("visualdl is not installed: no dashboard logs (pip install visualdl)")
            return
        self.writer = LogWriter(logdir=self.log_dir)

    def scalars(self, step: int, values: Dict[str, float]) -> None:
        if self.writer is None:
            return
        for k, v in values.items():
            self.writer.add_scalar(tag=k, value=float(v), step=int(step))

    def close(self) -> None:
        if self.writer is None:
            return
        self.writer.close()
        get_logger().info(f"VisualDL logs: {os.path.abspath(self.log_dir)} "
                          f"(view with: visualdl --logdir {self.log_dir})")


@LOGGERS.register()
class MetricsJson(Sink):
    """Every evaluation record so far, as a JSON list in ``output_dir/metrics.json``, rewritten
    whole (atomically) after each evaluation (rank 0 only)."""

    def __init__(self, output_dir: str):
        self.path = os.path.join(output_dir, "metrics.json")
        self.history: List[Dict[str, Any]] = []

    def begin(self, history: List[Dict[str, Any]]) -> None:
        self.history = list(history)

    def evaluation(self, record: Dict[str, Any]) -> None:
        self.history.append(record)
        if dist.is_main():
            write_text(self.path, json.dumps(self.history, indent=1))


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
