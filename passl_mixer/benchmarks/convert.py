"""Checkpoint conversion: time and peak memory for a checkpoint of a published model's size.

    python tools/benchmark.py --mode convert                    # Mixer-B/16, 1000 classes
    python tools/benchmark.py --mode convert --arch l16 --format safetensors

Writes a random official-layout ``.npz`` with the shapes of ``--arch`` (B/16 with a
1000-class head: 59.9 M parameters, 240 MB) to a temp directory, then converts it in a fresh
process and reads that process's peak resident memory (``ru_maxrss``). The baseline is the peak
of a process that only imports paddle and passl_mixer; the difference is what the conversion
itself costs, compared with the checkpoint's size.

Mixer only: the synthetic source is the official Flax ``.npz`` layout of Google's released
Mixer checkpoints. gMLP, ResMLP and FNet checkpoints go through the same reader and writer with
other key names (see ``checkpoints/``), so their cost per parameter is expected to be close, but
it is not measured here; ``--arch`` picks the checkpoint's size among the Mixer variants.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from typing import Any, Dict

import numpy as np

from .child import child_env



def add_args(parser) -> None:
    from ..models.backbones.mlp_mixer import ARCHS

    parser.add_argument("--arch", default="b16", choices=list(ARCHS),
                        help="Mixer variant whose shapes to use (the checkpoint's size)")
    parser.add_argument("--num-classes", type=int, default=1000, help="head size (0: no head)")
    parser.add_argument("--format", default="pdparams", choices=["pdparams", "safetensors"])


def official_shapes(arch: str, num_classes: int, img_size: int = 224) -> Dict[str, tuple]:
    """Key -> shape of an official Mixer .npz of this variant."""
    from ..models.backbones.mlp_mixer import ARCHS

    a = ARCHS[arch]
    p, c, s = a["patch_size"], a["hidden_dim"], (img_size // a["patch_size"]) ** 2
    shapes = {"stem/kernel": (p, p, 3, c), "stem/bias": (c,)}
    for i in range(a["num_blocks"]):
        for ln in ("LayerNorm_0", "LayerNorm_1"):
            shapes.update({f"MixerBlock_{i}/{ln}/scale": (c,), f"MixerBlock_{i}/{ln}/bias": (c,)})
        for mix, n, d in (("token_mixing", s, a["tokens_mlp_dim"]),
                          ("channel_mixing", c, a["channels_mlp_dim"])):
            shapes.update({f"MixerBlock_{i}/{mix}/Dense_0/kernel": (n, d),
                           f"MixerBlock_{i}/{mix}/Dense_0/bias": (d,),
                           f"MixerBlock_{i}/{mix}/Dense_1/kernel": (d, n),
                           f"MixerBlock_{i}/{mix}/Dense_1/bias": (n,)})
    shapes.update({"pre_head_layer_norm/scale": (c,), "pre_head_layer_norm/bias": (c,)})
    if num_classes:
        shapes.update({"head/kernel": (c, num_classes), "head/bias": (num_classes,)})
    return shapes


def write_official_npz(path: str, shapes: Dict[str, tuple]) -> int:
    """Write random float32 arrays as an (uncompressed) .npz one at a time; return parameters."""
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, shape in shapes.items():
            with zf.open(f"{key}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, rng.standard_normal(shape, dtype=np.float32) * 0.02)
    return int(sum(np.prod(s) for s in shapes.values()))


def _child(job: Dict[str, Any]) -> Dict[str, Any]:
    """In a fresh process (paddle and passl_mixer already imported by ``-m``): convert, or not
    for the baseline, and report the time and the peak resident memory."""
    from passl_mixer.checkpoints import convert_checkpoint

    start = time.perf_counter()
    if job["kind"] == "convert":
        convert_checkpoint(job["src"], job["output"], format=job["format"])
    return {"convert_seconds": time.perf_counter() - start,
            "maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def _run_child(job: Dict[str, Any]) -> Dict[str, Any]:
    env = child_env(int(os.environ.get("OMP_NUM_THREADS", "2")))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "passl_mixer.benchmarks.convert", json.dumps(job)],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child {job['kind']} failed:\n{proc.stderr[-3000:]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]),
            "process_seconds": time.perf_counter() - start}


def run(args) -> Dict[str, Any]:
    mb = 1024 ** 2
    with tempfile.TemporaryDirectory(prefix="passl_convert_bench_") as tmp:
        src = os.path.join(tmp, f"Mixer-{args.arch}.npz")
        start = time.perf_counter()
        params = write_official_npz(src, official_shapes(args.arch, args.num_classes))
        size = os.path.getsize(src)
        print(f"wrote {src}: {params:,} parameters, {size / mb:.0f} MB in "
              f"{time.perf_counter() - start:.1f} s", flush=True)
        base = _run_child({"kind": "baseline"})
        conv = _run_child({"kind": "convert", "src": src, "output": os.path.join(tmp, "out"),
                           "format": args.format})
        out_size = os.path.getsize(os.path.join(tmp, "out", f"model.{args.format}"))
    extra = conv["maxrss_bytes"] - base["maxrss_bytes"]
    result = {"arch": args.arch, "num_classes": args.num_classes, "format": args.format,
              "params": params, "checkpoint_mb": size / mb, "output_mb": out_size / mb,
              "convert_seconds": conv["convert_seconds"],
              "process_seconds": conv["process_seconds"],
              "baseline_rss_mb": base["maxrss_bytes"] / mb,
              "peak_rss_mb": conv["maxrss_bytes"] / mb, "extra_rss_mb": extra / mb,
              "extra_over_checkpoint": extra / size}
    print(f"conversion to .{args.format}: {result['convert_seconds']:.1f} s "
          f"({result['process_seconds']:.1f} s for the whole process, paddle import included)")
    print(f"peak memory: {result['peak_rss_mb']:.0f} MB, of which {result['extra_rss_mb']:.0f} MB "
          f"above the import baseline = {result['extra_over_checkpoint']:.2f} x the checkpoint")
    return result


if __name__ == "__main__":
    print(json.dumps(_child(json.loads(sys.argv[1]))))
