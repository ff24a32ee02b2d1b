"""Print the Mixer variants table (or one config's model): dimensions, parameters and GMACs.

    python tools/model_info.py                          # every variant of the paper's Table 1
    python tools/model_info.py -c configs/demo/mixer_digits.yaml
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Paddle's C++ (glog) warnings, e.g. PIR's "... not support input out tensor for now!!!!!", are
# not for users of this tool; GLOG_minloglevel=0 shows them again
os.environ.setdefault("GLOG_minloglevel", "2")

from passl_mixer.cli import run, tool_parser  # noqa: E402


def main(argv=None):
    parser = tool_parser(__doc__)
    parser.add_argument("-c", "--config", help="describe this config's model instead")
    parser.add_argument("-o", "--override", action="append", default=[])
    parser.add_argument("--num-classes", type=int, default=1000)
    args = parser.parse_args(argv)

    import paddle

    import passl_mixer as pm
    from passl_mixer.models.info import describe_classifier

    if args.config:
        cfg = pm.load_config(args.config, args.override)
        with paddle.LazyGuard():  # shapes only: no memory for the weights
            model = pm.build_model(cfg["model"])
        bb_params, total, gmacs = describe_classifier(model)
        b = model.backbone
        print(f"{cfg['model']['name']} / MlpMixer: {b.num_tokens} tokens of {b.hidden_dim} channels, "
              f"{b.num_blocks} blocks; {total:,} parameters ({bb_params:,} in the backbone); "
              f"{gmacs:.3f} GMACs per {b.img_size[0]}x{b.img_size[1]} image")
        return 0
    print("| arch | patch | hidden C | blocks | D_S (token MLP) | D_C (channel MLP) | tokens @224 "
          f"| params w/o head | params with {args.num_classes}-class head | GMACs @224 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for arch, d in pm.ARCHS.items():
        cfg = {"name": "ImageClassifier", "backbone": {"name": "MlpMixer", "arch": arch},
               "head": {"name": "LinearClsHead", "num_classes": args.num_classes,
                        "in_channels": d["hidden_dim"]}}
        with paddle.LazyGuard():
            model = pm.build_model(cfg)
        bb_params, total, gmacs = describe_classifier(model)
        print(f"| {arch} | {d['patch_size']} | {d['hidden_dim']} | {d['num_blocks']} "
              f"| {d['tokens_mlp_dim']} | {d['channels_mlp_dim']} | {model.backbone.num_tokens} "
              f"| {bb_params / 1e6:.1f} M | {total:,} | {gmacs:.2f} |")
    return 0


if __name__ == "__main__":
    run(main)
