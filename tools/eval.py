"""Evaluate weights on the config's validation set (top-1, top-5, loss).

    python tools/eval.py -c configs/demo/mixer_digits.yaml -o weights=output/mixer_digits/checkpoints/best.pdckpt

``weights`` takes a training checkpoint (.pdckpt), a weights file (.pdparams) or .safetensors.
Run it under ``python -m paddle.distributed.launch`` to share the work; the numbers are the same.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from passl_mixer.cli import config_name, config_parser, run  # noqa: E402


def main(argv=None):
    parser = config_parser(__doc__.strip().splitlines()[0])
    args = parser.parse_args(argv)

    from passl_mixer import load_config
    from passl_mixer.engine import Trainer

    cfg = load_config(args.config, args.override)
    Trainer(cfg, config_name=config_name(args.config), eval_only=True).evaluate()
    return 0


if __name__ == "__main__":
    run(main)
