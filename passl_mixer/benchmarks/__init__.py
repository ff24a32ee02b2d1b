"""Benchmarks run by tools/benchmark.py, one module per mode.

Each module defines ``add_args(parser)`` and ``run(args) -> dict`` (the figures, printed as
JSON by the tool). They measure speed and memory on this machine; tests never time anything.

``gpu_check`` is tools/gpu_check.py's (not a benchmark mode): every GPU path run once and
compared with float32, with its speed and memory.
"""
MODES = ("train", "data", "infer", "convert", "threads")
