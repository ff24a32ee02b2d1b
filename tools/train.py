"""Train a model from a YAML config.

    python tools/train.py -c configs/demo/mixer_digits.yaml
    python tools/train.py -c configs/mlp_mixer/mixer_b16_224.yaml -o data.train.batch_size=64
    python -m paddle.distributed.launch --gpus 0,1,2,3 tools/train.py -c CFG
    python tools/train.py -c CFG --resume auto          # continue from the newest checkpoint
    python tools/train.py -c CFG --eval-only -o weights=PATH   # as tools/eval.py does
    python tools/train.py -c CFG --eval-only --resume auto     # the newest checkpoint's weights
    python tools/train.py -c CFG --print-config        # the merged config with every default
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Paddle's C++ (glog) warnings, e.g. PIR's "... not support input out tensor for now!!!!!", are
# not for users of this tool; GLOG_minloglevel=0 shows them again
os.environ.setdefault("GLOG_minloglevel", "2")

from passl_mixer.cli import config_name, config_parser, run  # noqa: E402


def main(argv=None):
    parser = config_parser(__doc__)
    parser.add_argument("--resume", default=None, metavar="auto|PATH",
                        help="'auto': the newest complete checkpoint in the output dir; or a path")
    parser.add_argument("--eval-only", action="store_true",
                        help="evaluate the weights of --resume auto|PATH (or weights=PATH) as "
                             "tools/eval.py does, into OUTPUT_DIR/eval/<checkpoint name>/, "
                             "and exit")
    parser.add_argument("--overwrite", action="store_true",
                        help="start afresh in an output dir that holds another run, moving that "
                             "run's files into OUTPUT_DIR/replaced_<time>/ (nothing is deleted)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the merged config with every default filled in, and exit")
    args = parser.parse_args(argv)

    from passl_mixer import load_config
    from passl_mixer.engine import Trainer

    cfg = load_config(args.config, args.override)
    if args.print_config:
        import yaml
        from passl_mixer.engine.trainer import validate_config
        from passl_mixer.registry import config_with_defaults

        validate_config(cfg)
        print(yaml.safe_dump(config_with_defaults(cfg), sort_keys=False, default_flow_style=None),
              end="")
        return 0
    if args.eval_only:
        # evaluation alone: no training data, optimizer or run files are needed or touched
        from passl_mixer.engine.evaluation import evaluate_config

        evaluate_config(cfg, config_name=config_name(args.config), resume=args.resume)
        return 0
    trainer = Trainer(cfg, config_name=config_name(args.config), resume=args.resume,
                      overwrite=args.overwrite)
    trainer.train()
    return 0


if __name__ == "__main__":
    run(main, keep_freed_memory=True)
