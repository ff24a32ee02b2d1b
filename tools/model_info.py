"""Print every backbone family's variants table (or one config's model): dimensions, parameters
and GMACs.

    python tools/model_info.py                          # every variant of every family
    python tools/model_info.py --family GMLP            # one family's variants
    python tools/model_info.py -c configs/demo/mixer_digits.yaml
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Paddle's C++ (glog) warnings, e.g. PIR's "... not support input out tensor for now!!!!!", are
# not for users of this tool; GLOG_minloglevel=0 shows them again
os.environ.setdefault("GLOG_minloglevel", "2")

from passl_mixer.cli import run, tool_parser  # noqa: E402

# column titles of the dimensions the families' variants tables use (others print as named)
DIM_TITLES = {"patch_size": "patch", "hidden_dim": "hidden C", "num_blocks": "blocks",
              "tokens_mlp_dim": "D_S (token MLP)", "channels_mlp_dim": "D_C (channel MLP)"}


def print_family(family, rows, num_classes):
    dims = [k for k in rows[0] if k not in ("arch", "img_size", "num_tokens", "backbone_params",
                                            "params", "gmacs")]
    size = "x".join(str(s) for s in rows[0]["img_size"]) if rows[0]["img_size"][0] != \
        rows[0]["img_size"][1] else str(rows[0]["img_size"][0])
    titles = ["arch", *(DIM_TITLES.get(k, k) for k in dims), f"tokens @{size}",
              "params w/o head", f"params with {num_classes}-class head", f"GMACs @{size}"]
    print(f"{family} (backbone: {{name: {family}, arch: ARCH}}):\n")
    print("| " + " | ".join(titles) + " |")
    print("|" + "---|" * len(titles))
    for r in rows:
        cells = [r["arch"], *(str(r[k]) for k in dims), str(r["num_tokens"]),
                 f"{r['backbone_params'] / 1e6:.1f} M", f"{r['params']:,}", f"{r['gmacs']:.2f}"]
        print("| " + " | ".join(cells) + " |")
    print()


def main(argv=None):
    parser = tool_parser(__doc__)
    parser.add_argument("-c", "--config", help="describe this config's model instead")
    parser.add_argument("-o", "--override", action="append", default=[])
    parser.add_argument("--family", action="append", default=[], metavar="NAME",
                        help="only this backbone family (repeatable; default: all)")
    parser.add_argument("--num-classes", type=int, default=1000)
    args = parser.parse_args(argv)

    import paddle

    import passl_mixer as pm
    from passl_mixer.models.info import count_parameters, describe_classifier, describe_variants

    if args.config:
        cfg = pm.load_config(args.config, args.override)
        with paddle.LazyGuard():  # shapes only: no memory for the weights
            model = pm.build_model(cfg["model"])
        b = model.backbone
        if hasattr(model, "num_classes"):
            bb_params, total, gmacs = describe_classifier(model)
            what = "image"
        else:  # an SSL model (MoCoV3, BYOL): its backbone's MACs, necks and momentum copy apart
            bb_params, total, gmacs = count_parameters(b), count_parameters(model), b.macs() / 1e9
            what = "image through the backbone"
        print(f"{cfg['model']['name']} / {type(b).__name__}: {b.num_tokens} tokens of "
              f"{b.hidden_dim} channels, {b.num_blocks} blocks; {total:,} parameters "
              f"({bb_params:,} in the backbone); {gmacs:.3f} GMACs per "
              f"{b.img_size[0]}x{b.img_size[1]} {what}")
        return 0
    families = pm.list_variants()
    unknown = [f for f in args.family if f not in families]
    if unknown:
        parser.error(f"unknown family {', '.join(unknown)}: choose from {', '.join(families)}")
    for family in args.family or families:
        print_family(family, describe_variants(family, args.num_classes), args.num_classes)
    plain = [name for name in pm.list_models()["backbones"] if name not in families]
    if plain and not args.family:
        print(f"Without named variants (describe a config of theirs with -c): {', '.join(plain)}")
    return 0


if __name__ == "__main__":
    run(main)
