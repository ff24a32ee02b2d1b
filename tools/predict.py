"""Classify images with an exported model: one JSON line per image on stdout.

    python tools/predict.py --model-dir output/mixer_digits_infer --input data/digits/val
    python tools/predict.py --model-dir DIR --input cat.jpg --topk 5 --precision bf16
    python tools/predict.py --model-dir DIR --input photos/ --precision int8   # tools/quantize.py

Each line is {"file": ..., "topk": [{"label": i, "class_name": ..., "score": p}, ...]} with p
a probability. A folder is searched recursively and run in batches (a progress bar shows on a
terminal); unreadable images are reported on stderr and skipped. Exit status 1 if no image
could be classified.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Paddle's C++ (glog) warnings, e.g. PIR's "... not support input out tensor for now!!!!!", are
# not for users of this tool; GLOG_minloglevel=0 shows them again
os.environ.setdefault("GLOG_minloglevel", "2")

from passl_mixer.cli import run, tool_parser  # noqa: E402


def main(argv=None):
    parser = tool_parser(__doc__)
    parser.add_argument("--model-dir", required=True, help="a directory from tools/export_model.py")
    parser.add_argument("--input", required=True, metavar="FILE_OR_DIR",
                        help="an image or a folder")
    parser.add_argument("--topk", type=int, default=5, help="classes reported per image")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    parser.add_argument("--device", choices=("cpu", "gpu"), default=None,
                        help="default: gpu with --tensorrt, else cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16", "int8"), default="fp32",
                        help="bf16: CPUs with bf16 instructions (else fp32) or GPUs; fp16: GPUs; "
                             "int8: OpenVINO on the model tools/quantize.py calibrated")
    parser.add_argument("--engine", choices=("paddle", "openvino"), default=None,
                        help="paddle (Paddle Inference) or openvino (CPU: inference.onnx, or "
                             "the INT8 model; pip install openvino); default: openvino for "
                             "--precision int8, else paddle")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU math threads (default: the cores available)")
    parser.add_argument("--tensorrt", action="store_true",
                        help="GPU: run through TensorRT (needs a Paddle build with TensorRT; a "
                             "Paddle 3.x export is converted with paddle.tensorrt.convert first)")
    args = parser.parse_args(argv)
    if args.device is None:  # TensorRT is GPU-only: --tensorrt alone means the GPU
        args.device = "gpu" if args.tensorrt else "cpu"

    from passl_mixer.data import list_images
    from passl_mixer.inference import Predictor

    predictor = Predictor(args.model_dir, device=args.device, precision=args.precision,
                          threads=args.threads, batch_size=args.batch_size,
                          tensorrt=args.tensorrt, keep_memory=True, quiet=True,
                          engine=args.engine)
    files = list_images(args.input, "--input")
    try:
        done, skipped = classify(predictor, files, args.topk)
    except BrokenPipeError:  # the reader (e.g. `| head`) stopped: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    print(f"{done} image(s) classified, {skipped} skipped ({predictor})", file=sys.stderr)
    return 0 if done else 1


def classify(predictor, files, topk):
    """Print a JSON line per readable image; return (classified, skipped) counts."""
    from passl_mixer.logs import ProgressBar

    bar = ProgressBar(len(files), desc="predict", stream=sys.stderr)
    done = skipped = 0
    for end, results, unreadable in predictor.classify_files(files, topk):
        for path, exc in unreadable:
            print(f"warning: skipped {path}: {exc}", file=sys.stderr)
        for path, top in results:
            print(json.dumps({"file": path, "topk": top}), flush=True)
        done += len(results)
        skipped += len(unreadable)
        bar.update(end)
    bar.close()
    return done, skipped


if __name__ == "__main__":
    run(main)
