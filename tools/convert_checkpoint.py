"""Convert a Mixer, gMLP, ResMLP or FNet checkpoint into passl_mixer weights + model.yaml.

    python tools/convert_checkpoint.py --src Mixer-B_16.npz --output weights/mixer_b16_in21k
    python tools/convert_checkpoint.py --src gmlp_s16_224.safetensors --output weights/gmlp_s16
    python tools/convert_checkpoint.py --src resmlp_12.npz --output DIR --format safetensors

Reads an official Flax Mixer .npz (opened with allow_pickle=False), or a state dict
(.pdparams, .pdckpt, .safetensors or NumPy .npz) in the timm, PASSL v1, passl_mixer, MoCo v3
or BYOL layout: timm's gMLP and ResMLP files with timm's parameter names (as in its
timm/models/mlp_mixer.py; Linear weights in PyTorch's [out, in] layout are transposed), the
official ResMLP code's names too. The family (MlpMixer, GMLP, ResMLP, FNet) and the
dimensions are inferred from the keys and shapes; sizes outside a family's variants table get
explicit dimensions. Writes DIR/model.pdparams (or model.safetensors) and DIR/model.yaml,
whose `model:` section builds the matching model. Nothing is downloaded. On any error DIR is
left as it was.
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
    parser.add_argument("--src", required=True,
                        help="checkpoint file to convert (official Mixer .npz, or a timm / "
                             "PASSL v1 / passl_mixer / MoCo v3 / BYOL state dict of any family)")
    parser.add_argument("--output", required=True, help="output directory (replaced as a whole)")
    parser.add_argument("--format", default="pdparams", choices=["pdparams", "safetensors"],
                        help="weights file format (safetensors holds no pickled code)")
    parser.add_argument("--img-size", type=int, nargs="+", default=None, metavar="N",
                        help="resolution the checkpoint was trained at (H [W]); only needed "
                             "when its patch grid is not square")
    parser.add_argument("--gelu", choices=["tanh", "exact"], default=None,
                        help="override the GELU form implied by the source's layout")
    args = parser.parse_args(argv)
    if args.img_size and len(args.img_size) > 2:
        parser.error("--img-size takes one or two numbers (H [W])")

    from passl_mixer.checkpoints import convert_checkpoint
    from passl_mixer.logs import setup_logging

    setup_logging()  # the package's one log format, as every tool
    img_size = args.img_size[0] if args.img_size and len(args.img_size) == 1 else args.img_size
    result = convert_checkpoint(args.src, args.output, format=args.format, img_size=img_size,
                                gelu=args.gelu)
    print(f"wrote {result['weights']} and {result['config']}")
    return 0


if __name__ == "__main__":
    run(main)
