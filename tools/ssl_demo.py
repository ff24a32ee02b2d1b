"""SSL evidence on the shipped digits: pretrain MoCo v3 and BYOL, linear-probe each, and
linear-probe a randomly initialised backbone with the same probe recipe; print the table.

    python tools/ssl_demo.py                        # about 10 minutes on a 2-core CPU
    python tools/ssl_demo.py --output output/ssl_demo --budget 300

Each step is an ordinary command of this repository (printed as it runs), so any row can be
re-run by hand:
  pretrain  tools/train.py -c configs/demo/{mocov3,byol}_mixer_digits.yaml
  probe     tools/train.py -c configs/demo/linear_probe_digits.yaml -o model.pretrained=CKPT
  baseline  tools/train.py -c configs/demo/linear_probe_digits.yaml   (no pretrained weights)
Probe top-1 is the last epoch's, on the 359 validation images. Pretraining wall time is checked
against ``--budget`` seconds; a run over it is marked in the table. The results are also written
to ``<output>/results.json`` and ``<output>/results.md``.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = {"MoCo v3": "mocov3", "BYOL": "byol"}
PROBE_CONFIG = "configs/demo/linear_probe_digits.yaml"


def run(args):
    """Run ``python tools/train.py ARGS`` from the repository root; (wall s, CPU s)."""
    cmd = [sys.executable, os.path.join("tools", "train.py")] + args
    print("$ " + " ".join(cmd[1:]), flush=True)
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.time()
    # the run's progress lines, indented (the rest of its log is in its output
    # dir's train.log); a line at least every train.log_seconds, so minutes are never silent
    with subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True) as proc:
        for line in proc.stdout:
            if " step " in line or "done:" in line:
                print("    " + line.rstrip().split("] ", 1)[-1], flush=True)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.time() - start, (after.ru_utime + after.ru_stime) - (cpu.ru_utime + cpu.ru_stime)


def probe(output_dir, checkpoint=None):
    """Linear-probe the checkpoint's backbone (None: random init); (top-1, wall s)."""
    args = ["-c", PROBE_CONFIG, "-o", f"train.output_dir={output_dir}"]
    if checkpoint:
        args += ["-o", f"model.pretrained={checkpoint}"]
    wall, _ = run(args)
    with open(os.path.join(ROOT, output_dir, "metrics.json")) as f:
        return json.load(f)[-1]["top1"], wall


def main():
    first, _, rest = __doc__.strip().partition("\n")
    parser = argparse.ArgumentParser(description=first, epilog=rest.strip("\n"),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="output/ssl_demo", help="directory for all runs")
    parser.add_argument("--budget", type=float, default=300.0,
                        help="pretraining wall-time budget per method, seconds")
    args = parser.parse_args()

    rows = []
    for label, key in METHODS.items():
        out = os.path.join(args.output, key)
        wall, cpu = run(["-c", f"configs/demo/{key}_mixer_digits.yaml",
                         "-o", f"train.output_dir={out}"])
        top1, probe_wall = probe(out + "_probe", os.path.join(out, "checkpoints", "latest.pdckpt"))
        rows.append({"backbone": f"{label} pretrained", "top1": top1, "pretrain_s": wall,
                     "pretrain_cpu_s": cpu, "over_budget": wall > args.budget,
                     "probe_s": probe_wall})
    top1, probe_wall = probe(os.path.join(args.output, "random_probe"))
    baseline = {"backbone": "random init", "top1": top1, "pretrain_s": 0.0,
                "pretrain_cpu_s": 0.0, "over_budget": False, "probe_s": probe_wall}
    rows.append(baseline)

    lines = ["| backbone | probe top-1 (%) | vs random init | pretrain wall / CPU s | probe s |",
             "|---|---|---|---|---|"]
    for r in rows:
        gain = pre = "-"
        if r is not baseline:
            gain = f"{r['top1'] - baseline['top1']:+.1f}"
            pre = f"{r['pretrain_s']:.0f} / {r['pretrain_cpu_s']:.0f}" \
                + (" (over budget)" if r["over_budget"] else "")
        lines.append(f"| {r['backbone']} | {r['top1']:.1f} | {gain} | {pre} | {r['probe_s']:.0f} |")
    table = "\n".join(lines)
    print("\n" + table)
    met = all(r["top1"] - baseline["top1"] >= 10 for r in rows if r is not baseline)
    print(f"\ngoal, each SSL probe >= random-init probe + 10 points: {'met' if met else 'NOT met'}")
    sys.path.insert(0, ROOT)
    from passl_mixer.fileio import write_text

    write_text(os.path.join(ROOT, args.output, "results.json"),
               json.dumps({"rows": rows, "budget_s": args.budget, "goal_met": met}, indent=1))
    write_text(os.path.join(ROOT, args.output, "results.md"), table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
