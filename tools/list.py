"""List what can be built: registered names, each backbone family's variants, shipped configs.

    python tools/list.py                 # everything
    python tools/list.py models          # the names each registry accepts (plugins included)
    python tools/list.py variants        # each family's arch names (Mixer s32 ... h14) and dims
    python tools/list.py configs         # runnable configs (train with tools/train.py -c PATH)

The same from Python: passl_mixer.list_models(), list_variants(), list_configs().
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Paddle's C++ (glog) warnings are not for users of this tool; GLOG_minloglevel=0 shows them
os.environ.setdefault("GLOG_minloglevel", "2")

from passl_mixer.cli import run, tool_parser  # noqa: E402

WHAT = ("models", "variants", "configs")


def main(argv=None):
    parser = tool_parser(__doc__)
    parser.add_argument("what", nargs="*", metavar="WHAT",
                        help=f"any of {', '.join(WHAT)} (default: all)")
    args = parser.parse_args(argv)
    unknown = [w for w in args.what if w not in WHAT]
    if unknown:
        parser.error(f"unknown {', '.join(unknown)}: choose from {', '.join(WHAT)}")
    what = args.what or WHAT

    import passl_mixer as pm

    if "models" in what:
        print("registered names (config key `name:`):")
        for key, names in pm.list_models().items():
            print(f"  {key + ':':15s}{', '.join(names) or '-'}")
    if "variants" in what:
        variants = pm.list_variants()
        for family, archs in variants.items():
            print(f"{family} variants (backbone: {{name: {family}, arch: ARCH}}):")
            for arch, d in archs.items():
                print(f"  {arch:6s}" + ", ".join(f"{k} {v}" for k, v in d.items()))
        plain = [name for name in pm.list_models()["backbones"] if name not in variants]
        if plain:
            print(f"backbones without named variants (give their dimensions): {', '.join(plain)}")
    if "configs" in what:
        print("shipped configs (python tools/train.py -c PATH):")
        for path in pm.list_configs() or ["(none: configs/ is in the source checkout only)"]:
            print(f"  {path}")
    return 0


if __name__ == "__main__":
    run(main)
