"""The inference benchmark's logic (tools/benchmark.py --mode infer): the peak's soundness check
on figures from real runs, the choice of the fastest exact engine, the peak shapes taken from
the model, and the engine list. Speeds themselves are measured by the tool, never here."""
import argparse

import pytest

from passl_mixer.benchmarks import infer
from passl_mixer.errors import ConfigError


def _row(precision, gflops, peak=False, img_per_s=None, diff=None):
    row = {"precision": precision, "gflops": gflops, "peak": peak, "img_per_s": img_per_s,
           "seconds": 1.0}
    if diff is not None:
        row["max_diff_vs_paddle_fp32"] = diff
    return row


def test_a_share_above_peak_is_reported_as_an_unsound_peak():
    # Mixer-S/16, batch 32, AMD EPYC, old tool (one 4096x4096 peak program): the bf16 predictor
    # ran at 117.2 GFLOP/s against a 110.8 GFLOP/s "peak", 106%: the peak was measured badly.
    rows = {"paddle fp32": _row("fp32", 63.88, img_per_s=8.46),
            "peak fp32 4096": _row("fp32", 64.07, peak=True),
            "paddle bf16": _row("bf16", 117.23, img_per_s=15.52),
            "peak bf16 4096": _row("bf16", 110.79, peak=True)}
    peaks, warnings = infer.shares_of_peak(rows)
    assert peaks == {"fp32": 64.07, "bf16": 110.79}
    assert rows["paddle fp32"]["share_of_peak"] == pytest.approx(0.997, abs=1e-3)
    assert rows["paddle bf16"]["share_of_peak"] == pytest.approx(1.058, abs=1e-3)
    assert len(warnings) == 1 and "paddle bf16" in warnings[0] and "106%" in warnings[0]


def test_the_peak_is_the_best_peak_program_of_the_precision():
    # Mixer-S/16, batch 32, AMD EPYC, this tool (peak programs of the model's two heaviest
    # Linear shapes and a 2048 square, by every engine of the precision, in the same rounds):
    # the best bf16 peak program is the peak; the model sits under it.
    rows = {"paddle bf16": _row("bf16", 127.82, img_per_s=16.92),
            "openvino bf16": _row("bf16", 114.91, img_per_s=15.21),
            "peak paddle bf16 6272x512 @ 512x2048": _row("bf16", 96.97, peak=True),
            "peak openvino bf16 6272x512 @ 512x2048": _row("bf16", 114.14, peak=True),
            "peak paddle bf16 6272x2048 @ 2048x512": _row("bf16", 126.29, peak=True),
            "peak paddle bf16 2048x2048 @ 2048x2048": _row("bf16", 145.77, peak=True),
            "openvino fp32": _row("fp32", 64.78, img_per_s=8.58)}  # no fp32 peak: no share
    peaks, warnings = infer.shares_of_peak(rows)
    assert peaks == {"bf16": 145.77}
    assert rows["paddle bf16"]["share_of_peak"] == pytest.approx(0.877, abs=1e-3)
    assert rows["openvino bf16"]["share_of_peak"] == pytest.approx(0.788, abs=1e-3)
    assert "share_of_peak" not in rows["openvino fp32"]
    assert warnings == []
    # Had only the first peak program been measured, the model would be at 132%: flagged.
    for name in ("peak paddle bf16 2048x2048 @ 2048x2048", "peak paddle bf16 6272x2048 @ 2048x512",
                 "peak openvino bf16 6272x512 @ 512x2048"):
        del rows[name]
    assert len(infer.shares_of_peak(rows)[1]) == 2
    # within the noise margin: no warning
    rows["paddle bf16"]["gflops"] = rows["openvino bf16"]["gflops"] = 96.97 * 1.04
    assert infer.shares_of_peak(rows)[1] == []


def test_fastest_fp32_engine_must_match_paddle_fp32():
    rows = {"paddle fp32": _row("fp32", 60, img_per_s=8.0, diff=0.0),
            "onnxruntime fp32": _row("fp32", 70, img_per_s=9.0, diff=3e-6),
            "openvino fp32": _row("fp32", 90, img_per_s=12.0, diff=2e-3),  # not fp32-exact
            "paddle bf16": _row("bf16", 100, img_per_s=15.0, diff=1e-2),
            "openvino bf16": _row("bf16", 90, img_per_s=14.0, diff=1e-2),
            "peak paddle fp32 x": _row("fp32", 200, peak=True)}
    assert infer.fastest_per_precision(rows) == {"fp32": "onnxruntime fp32",
                                                 "bf16": "paddle bf16"}


def test_peak_shapes_are_the_models_heaviest_linears(tiny_classifier_cfg):
    from passl_mixer.registry import build_model

    model = build_model(tiny_classifier_cfg)  # 16 tokens of 32 channels, channel MLP 64
    model.eval()
    shapes = infer.heaviest_linear_shapes(model, batch_size=8)
    # the channel MLP's fc1 and fc2 over 8 images x 16 tokens, both 128x32x64 MACs
    assert sorted(shapes) == [(128, 32, 64), (128, 64, 32)]
    assert infer.heaviest_linear_shapes(model, batch_size=8, count=3)[2] == (8, 32, 10)  # head
    # fc1 and fc2 are one peak chain (it alternates 32 -> 64 and 64 -> 32); the square its own
    assert infer.peak_chains(shapes + [(2048, 2048, 2048)]) == [shapes[0], (2048, 2048, 2048)]


def test_peak_program_is_a_chain_of_linears(tmp_path):
    import paddle
    files = infer._export_peak_program(str(tmp_path), 8, 16, onnx=False, bias=True)
    layer = paddle.jit.load(files["model_file"].rsplit(".", 1)[0])
    weights = sorted(tuple(p.shape) for p in layer.parameters() if len(p.shape) == 2)
    assert weights == sorted([(8, 16), (16, 8)] * (infer.PEAK_DEPTH // 2))
    assert len([p for p in layer.parameters() if len(p.shape) == 1]) == infer.PEAK_DEPTH
    assert infer.peak_label((6272, 768, 3072), bias=True) == \
        f"{infer.PEAK_DEPTH} linears 768<->3072 on 6272 rows + bias"


def _args(**kw):
    return argparse.Namespace(**{"engines": None, "skip_dygraph": False, **kw})


def test_engine_choice():
    chosen, skipped = infer._chosen_engines(_args(engines="paddle fp32,dygraph fp32",
                                                  skip_dygraph=True))
    assert [e.name for e in chosen] == ["paddle fp32"]
    assert skipped == {"dygraph fp32": "--skip-dygraph"}
    chosen, skipped = infer._chosen_engines(_args())
    names = [e.name for e in chosen] + list(skipped)
    assert sorted(names) == sorted(e.name for e in infer.ENGINES)  # each measured or explained
    assert all(why for why in skipped.values())
    with pytest.raises(ConfigError, match="unknown engine.*tensorrt"):
        infer._chosen_engines(_args(engines="paddle fp32,tensorrt"))
    with pytest.raises(ConfigError, match="must include 'paddle fp32'"):
        infer._chosen_engines(_args(engines="onnxruntime fp32"))
