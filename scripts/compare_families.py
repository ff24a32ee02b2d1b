"""Train the per-family digits demos one after another and print a markdown comparison table.

    python scripts/compare_families.py                      # all four, 40 epochs each (minutes)
    python scripts/compare_families.py --epochs 2 --families mixer fnet
    python scripts/compare_families.py --output runs/families -o train.seed=1

Each family's demo (configs/demo/<family>_digits.yaml: the same data, augmentation, optimizer,
schedule and epochs; only the backbone differs) runs through tools/train.py as a subprocess into
OUTPUT/<family> (a run already there is moved aside by --overwrite, nothing is deleted; without
--output a temporary directory is used and removed afterwards). The table gives the final
evaluation's top-1 (the last record of the run's metrics.json), the training-loop time read from
the run's train.log (from its "output:" line to its "done:" line: the epochs, the evaluations
and checkpoint saves, not Python start-up), training images per second over that time, and the
whole command's wall time. Times depend on the machine and its load.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

FAMILIES = ("mixer", "gmlp", "resmlp", "fnet")
LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\] (output:|done: (\d+) steps)")


def demo_config(family: str) -> str:
    return os.path.join(ROOT, "configs", "demo", f"{family}_digits.yaml")


def describe(config: str, overrides):
    """(backbone name, parameter count, training batch size) of a config, built shapes-only."""
    import paddle

    import passl_mixer as pm
    from passl_mixer.models.info import count_parameters

    cfg = pm.load_config(config, overrides)
    with paddle.LazyGuard():
        model = pm.build_model(cfg["model"])
    return cfg["model"]["backbone"]["name"], count_parameters(model), cfg["data"]["train"][
        "batch_size"]


def training_loop(train_log: str):
    """(seconds, optimizer steps) of the training loop, from train.log's timestamps."""
    start = end = steps = None
    with open(train_log) as f:
        for line in f:
            m = LOG_TIME.match(line)
            if not m:
                continue
            stamp = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
            if m.group(2) == "output:":
                start = stamp
            else:
                end, steps = stamp, int(m.group(3))
    if start is None or end is None:
        raise RuntimeError(f"{train_log} has no 'output:' and 'done:' lines: did the run finish?")
    return (end - start).total_seconds(), steps


def run_family(family: str, output_dir: str, overrides, threads=None):
    config = demo_config(family)
    name, params, batch_size = describe(config, overrides)
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train.py"), "-c", config, "--overwrite"]
    for override in [f"train.output_dir={output_dir}", *overrides]:
        cmd += ["-o", override]
    if threads:
        cmd += ["--threads", str(threads)]
    print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{family}: tools/train.py exited {proc.returncode}; its log is in "
                         f"{output_dir}/train.log")
    with open(os.path.join(output_dir, "metrics.json")) as f:
        final = json.load(f)[-1]
    seconds, steps = training_loop(os.path.join(output_dir, "train.log"))
    return {"family": name, "params": params, "top1": final["top1"], "epoch": final["epoch"],
            "train_s": seconds, "img_s": steps * batch_size / max(seconds, 1.0), "wall_s": wall}


def markdown_table(rows) -> str:
    lines = ["| family | params | val top-1 (%) | train time (s) | img/s | wall (s) |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['family']} | {r['params']:,} | {r['top1']:.2f} | {r['train_s']:.0f} "
                     f"| {r['img_s']:.0f} | {r['wall_s']:.0f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().partition("\n")[0],
                                     epilog=__doc__.strip().partition("\n")[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument("--epochs", type=int, default=None,
                        help="train.epochs for every family (default: the demos' 40)")
    parser.add_argument("--output", default=None, metavar="DIR",
                        help="runs go to DIR/<family> and the table to DIR/comparison.md "
                             "(default: a temporary directory, removed afterwards)")
    parser.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every family, as tools/train.py's -o "
                             "(repeatable)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU math threads of each run, as tools/train.py's --threads "
                             "(default: OMP_NUM_THREADS if set, else the cores available)")
    args = parser.parse_args(argv)
    overrides = list(args.override)
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")

    with tempfile.TemporaryDirectory(prefix="compare_families_") as tmp:
        output = os.path.abspath(args.output) if args.output else tmp
        rows = [run_family(family, os.path.join(output, family), overrides, args.threads)
                for family in args.families]
        table = markdown_table(rows)
        epochs = {r["epoch"] for r in rows}
        threads = args.threads or os.environ.get("OMP_NUM_THREADS") or "all cores"
        note = (f"epochs: {'/'.join(map(str, sorted(epochs)))}; top-1 of the final evaluation on "
                f"data/digits/val; {os.cpu_count()} CPU cores, math threads per run: {threads}")
        print(f"\n{table}\n\n{note}")
        if args.output:
            with open(os.path.join(output, "comparison.md"), "w") as f:
                f.write(f"{table}\n\n{note}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
