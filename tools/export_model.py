"""Export a trained (or converted) model for Paddle Inference, optionally also as ONNX.

    python tools/export_model.py -c configs/demo/mixer_digits.yaml --weights CKPT --output DIR
    python tools/export_model.py -c configs/mlp_mixer/mixer_b16_224.yaml --output /tmp/b16
    python tools/export_model.py -c CFG --weights W --output DIR --format onnx  # + inference.onnx

``--weights`` takes a training checkpoint (.pdckpt: its model weights), .pdparams or
.safetensors; without it the config's ``weights`` / ``model.pretrained`` or, failing those, the
random initial weights are exported. DIR gets the program, its parameters and inference.yml
(input size, preprocessing, class names, config); an export already in DIR is replaced only
once the new one is complete.
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
    parser.add_argument("--weights", default=None, metavar="PATH",
                        help="a .pdckpt training checkpoint, .pdparams or .safetensors file")
    parser.add_argument("--output", required=True, metavar="DIR", help="export directory")
    parser.add_argument("--softmax", action="store_true", default=None,
                        help="end the graph with a softmax (outputs probabilities, not logits)")
    parser.add_argument("--format", choices=("paddle", "onnx"), default="paddle",
                        help="'onnx' also writes inference.onnx (needs paddle2onnx)")
    parser.add_argument("--opset", type=int, default=13, help="ONNX opset version")
    args = parser.parse_args(argv)

    from passl_mixer import load_config
    from passl_mixer.export import export_model

    cfg = load_config(args.config, args.override)
    info = export_model(cfg, args.output, weights=args.weights, softmax=args.softmax,
                        fmt=args.format, opset=args.opset, model_name=config_name(args.config))
    files = [info["model_file"], info["params_file"]] + \
        ([info["onnx"]["file"]] if "onnx" in info else [])
    print(f"exported {info['model_name']} to {args.output}: {', '.join(files)}, inference.yml")
    print(f"input {info['input']['shape']} ({info['input']['channel_order']}), output "
          f"{info['output']['kind']} over {info['output']['num_classes']} classes, weights "
          f"{info['weights'] or '(none: random initial weights)'}")
    if "onnxruntime_max_abs_diff" in info.get("onnx", {}):
        print(f"onnxruntime vs Paddle: max abs diff {info['onnx']['onnxruntime_max_abs_diff']:.2e}")
    return 0


if __name__ == "__main__":
    run(main)
