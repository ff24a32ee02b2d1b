"""tools/benchmark.py --mode train: the same-run GEMM peak replays exactly the model's GEMMs, and
the trainer-overhead comparison runs the Trainer's own step code."""
import argparse

import paddle
import pytest

from conftest import TINY_BACKBONES
from passl_mixer.benchmarks import train as bench
from passl_mixer.registry import build_backbone


@pytest.mark.parametrize("family", ["MlpMixer", "GMLP", "ResMLP"])
def test_the_peak_replays_every_gemm_of_the_forward(family):
    """The captured GEMMs' FLOPs are the backbone's counted multiply-accumulates (x2) less the
    stem conv's: every Linear of the forward, token-axis ones included, once."""
    backbone = build_backbone(dict(TINY_BACKBONES[family]))
    images = paddle.randn([3, 3, 16, 16])
    gemms = bench.model_gemms(backbone, images)
    stem = backbone.num_tokens * backbone.hidden_dim * 3 * backbone.patch_size ** 2
    assert sum(g[3] for g in gemms) == 2 * 3 * (backbone.macs() - stem)
    assert {g[0] for g in gemms} == {"token", "channel"}
    run, flops = bench.gemm_replay(gemms)
    run()
    assert flops == sum(g[3] for g in gemms)


def test_benchmark_reports_share_of_peak_and_trainer_overhead(tmp_path, tiny_classifier_cfg):
    import yaml
    cfg = {"model": tiny_classifier_cfg,
           "optimizer": {"name": "AdamW", "lr": 0.001, "grad_clip": 1.0},
           "lr_scheduler": {"name": "Cosine", "warmup_steps": 2},
           "data": {"train": {"batch_size": 4}}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    parser = argparse.ArgumentParser()
    bench.add_args(parser)
    args = parser.parse_args(["-c", str(path), "--steps", "2", "--warmup", "1", "--trainer"])
    result = bench.run(args)
    assert result["batch_size"] == 4 and result["share_of_peak"] > 0
    assert result["trainer_ms"] > 0 and result["raw_ms"] > 0
    assert abs(result["trainer_overhead"]) < 10  # a ratio of two real timings
