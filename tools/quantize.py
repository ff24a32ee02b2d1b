"""Calibrate an INT8 model of an export (OpenVINO + NNCF) and check it against fp32.

    python tools/export_model.py -c configs/demo/mixer_digits.yaml --weights CKPT \
        --output output/mixer_digits_infer --format onnx
    python tools/quantize.py --model-dir output/mixer_digits_infer \
        --calib-dir data/digits/train --num-images 300 --check-dir data/digits/val
    python tools/predict.py --model-dir output/mixer_digits_infer --input IMG --precision int8

Needs the export's inference.onnx (--format onnx) and the optional packages openvino and nncf
(pip install -r requirements/int8.txt). The calibration images go through the preprocessing in
inference.yml; they should look like what the model will serve (a few hundred, e.g. from the
training set). DIR gets inference_int8.xml + .bin, and inference.yml an `int8:` section with the
check against fp32: max logit difference, top-1 agreement, and top-1 accuracy when --check-dir
is a class-per-folder set whose folder names are the export's class names.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("GLOG_minloglevel", "2")

from passl_mixer.cli import run, tool_parser  # noqa: E402


def main(argv=None):
    parser = tool_parser(__doc__)
    parser.add_argument("--model-dir", required=True,
                        help="a directory from tools/export_model.py --format onnx")
    parser.add_argument("--calib-dir", required=True, metavar="DIR",
                        help="images to calibrate on (searched recursively)")
    parser.add_argument("--num-images", type=int, default=300,
                        help="calibration images, spread evenly over the sorted folder")
    parser.add_argument("--check-dir", default=None, metavar="DIR",
                        help="held-out images to compare INT8 with fp32 on (default: the "
                             "calibration images)")
    parser.add_argument("--check-images", type=int, default=1000,
                        help="at most this many check images")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default: the cores available)")
    parser.add_argument("--token-mixing", choices=("auto", "batched", "linear"), default="auto",
                        help="how the token-mixing MLPs run in INT8: as exported ('batched'), as "
                             "two linears between transposes ('linear'), or 'auto': both "
                             "calibrated and timed here, the faster kept (README, INT8)")
    args = parser.parse_args(argv)

    from passl_mixer.quantize import quantize_export

    record = quantize_export(args.model_dir, args.calib_dir, num_images=args.num_images,
                             check_dir=args.check_dir, check_images=args.check_images,
                             threads=args.threads, token_form=args.token_mixing)
    check = record["check"]
    print(f"INT8 model written to {os.path.join(args.model_dir, record['model_file'])} "
          f"(calibrated on {record['calibration']['images']} images; token-mixing MLPs "
          f"{record['token_mixing']})")
    line = (f"vs fp32 on {check['images']} images of {check['dir']}: max logit diff "
            f"{check['max_abs_logit_diff']:.4g} ({100 * check['max_logit_diff_rel']:.2f}% of the "
            f"largest logit), top-1 agreement {100 * check['top1_agreement']:.2f}%")
    if "top1_int8" in check:
        line += (f", top-1 fp32 {100 * check['top1_fp32']:.2f}% / int8 "
                 f"{100 * check['top1_int8']:.2f}%")
    print(line)
    return 0


if __name__ == "__main__":
    run(main)
