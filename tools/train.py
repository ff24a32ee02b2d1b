"""Train a model from a YAML config.

    python tools/train.py -c configs/demo/mixer_digits.yaml
    python tools/train.py -c configs/mlp_mixer/mixer_b16_224.yaml -o data.train.batch_size=64
    python -m paddle.distributed.launch --gpus 0,1,2,3 tools/train.py -c CFG
    python tools/train.py -c CFG --resume auto          # continue from the newest checkpoint
    python tools/train.py -c CFG --eval-only -o weights=PATH
    python tools/train.py -c CFG --print-config        # the merged config with every default
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from passl_mixer.cli import config_name, config_parser, run  # noqa: E402


def main(argv=None):
    parser = config_parser(__doc__.strip().splitlines()[0])
    parser.add_argument("--resume", default=None, metavar="auto|PATH",
                        help="'auto': the newest complete checkpoint in the output dir; or a path")
    parser.add_argument("--eval-only", action="store_true",
                        help="evaluate (after --resume or weights=PATH) and exit")
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
    trainer = Trainer(cfg, config_name=config_name(args.config), resume=args.resume,
                      overwrite=args.overwrite, eval_only=args.eval_only)
    if args.eval_only:
        trainer.evaluate()
    else:
        trainer.train()
    return 0


if __name__ == "__main__":
    run(main)
