"""Evaluate weights on the config's validation set (top-1, top-5, loss).

    python tools/eval.py -c configs/demo/mixer_digits.yaml \
        --weights output/mixer_digits/checkpoints/best.pdckpt
    python tools/eval.py -c CFG --weights PATH --output DIR     # results into DIR

``--weights`` (the same as ``-o weights=PATH``) takes a training checkpoint (.pdckpt), a weights
file (.pdparams) or .safetensors; without it, the config's ``weights`` or ``model.pretrained``.
Only ``model``, ``data.val`` and the weights are needed: no training data, no optimizer. The
results (eval.json, eval.log) go to ``--output`` or ``<train.output_dir>/eval/<weights file
stem>/``; a training run's own files are never touched.
Run it under ``python -m paddle.distributed.launch`` to share the work; the numbers are the same.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from passl_mixer.cli import config_name, config_parser, run  # noqa: E402


def main(argv=None):
    parser = config_parser(__doc__.strip().splitlines()[0])
    parser.add_argument("--weights", default=None, metavar="PATH",
                        help="the weights to evaluate (.pdckpt, .pdparams or .safetensors); the "
                             "same as -o weights=PATH")
    parser.add_argument("--output", default=None, metavar="DIR",
                        help="where eval.json and eval.log go (default: "
                             "<train.output_dir>/eval/<weights file stem>)")
    parser.add_argument("--engine", default="auto", choices=("auto", "dygraph", "inference"),
                        help="auto (default): a Paddle Inference program on a CPU (oneDNN, "
                             "float32; several times faster than dygraph there), dygraph on a "
                             "GPU or with AMP")
    args = parser.parse_args(argv)

    from passl_mixer import load_config
    from passl_mixer.cli import current_threads
    from passl_mixer.engine.evaluation import evaluate_config

    cfg = load_config(args.config, args.override)
    evaluate_config(cfg, weights=args.weights, output_dir=args.output,
                    config_name=config_name(args.config), engine=args.engine,
                    threads=current_threads())
    return 0


if __name__ == "__main__":
    run(main)
