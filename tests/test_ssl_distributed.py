"""Two processes (gloo on CPU): MoCo v3's negatives come from both ranks, SyncBatchNorm uses the
global batch, and the trainer runs an SSL model under data parallel. One launch checks all."""
import json
import os
import textwrap

import numpy as np
import paddle

from conftest import TINY_BACKBONE, run_tool, write_yaml

B, D, TEMPERATURE = 3, 8, 0.2

SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import paddle
    import paddle.distributed as dist
    import passl_mixer as pm
    from passl_mixer.engine import Trainer
    from passl_mixer.models.necks.sync_bn import convert_sync_batchnorm

    out_dir, cfg = sys.argv[1], pm.load_config(sys.argv[2])
    B, D = {B}, {D}
    dist.init_parallel_env()
    rank = dist.get_rank()
    out = {{"world_size": dist.get_world_size()}}

    # 1. MoCo v3 logits: this rank's queries against the keys of every rank
    moco = pm.build_model(cfg["model"])
    rng = np.random.default_rng(100 + rank)
    q, k = (paddle.to_tensor(rng.standard_normal((B, D)), "float32") for _ in range(2))
    logits, labels = moco.contrastive_logits(q, k)
    out["logits"], out["labels"] = logits.numpy().tolist(), labels.numpy().tolist()

    # 2. SyncBatchNorm inside DataParallel: statistics and gradients of the global batch
    paddle.seed(0)
    net = convert_sync_batchnorm(paddle.nn.Sequential(paddle.nn.Linear(4, 4),
                                                      paddle.nn.BatchNorm1D(4)))
    out["init"] = {{k: v.numpy().tolist() for k, v in net.state_dict().items()}}
    x = paddle.to_tensor(rng.standard_normal((5, 4)) * (rank + 1) + 3 * rank, "float32")
    w = paddle.to_tensor(rng.standard_normal((5, 4)), "float32")
    dp = paddle.DataParallel(net)  # kept referenced: its reducer must outlive backward()
    y = dp(x)
    (y * w).sum().backward()
    out["bn"] = {{"x": x.numpy().tolist(), "w": w.numpy().tolist(), "y": y.numpy().tolist(),
                 "grad": net[0].weight.grad.numpy().tolist(),
                 "running_mean": net[1]._mean.numpy().tolist()}}

    # 3. the trainer: MoCo v3 under paddle.DataParallel for two optimizer steps
    trainer = Trainer(cfg)
    trainer.train()
    out["momentum"] = trainer.model.momentum
    out["state"] = {{k: float(v.astype("float64").sum())
                    for k, v in trainer.model.state_dict().items()}}
    json.dump(out, open(f"{{out_dir}}/rank{{rank}}.json", "w"))
""").format(B=B, D=D)


def neck(in_channels, num_layers=2, last_bn=False):
    return dict(name="MLPNeck", in_channels=in_channels, hidden_channels=32, out_channels=D,
                num_layers=num_layers, last_bn=last_bn)


def normalize(a):
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_two_processes(tmp_path, tiny_data):
    views = [[{"name": "RandomResizedCrop", "size": 16, "scale": [0.3, 1.0]},
              {"name": "Normalize"}]] * 2
    cfg = {
        "model": {"name": "MoCoV3", "backbone": dict(TINY_BACKBONE),
                  "projector": neck(32, 3, True), "predictor": neck(D),
                  "temperature": TEMPERATURE, "base_momentum": 0.9},
        "data": {"train": {"dataset": {"name": "MultiView", "views": views, "dataset": {
            "name": "ImageFolder", "root": os.path.join(tiny_data, "train")}}, "batch_size": 8}},
        "optimizer": {"name": "AdamW", "lr": 0.001},
        "train": {"epochs": 1, "max_steps": 2, "output_dir": str(tmp_path / "run"),
                  "log_interval": 1},
    }
    script = tmp_path / "ssl_two_ranks.py"
    script.write_text(SCRIPT)
    config = write_yaml(tmp_path / "mocov3.yaml", cfg)
    run_tool([str(script), str(tmp_path), config], cwd=str(tmp_path), launch_procs=2,
             timeout=240)
    ranks = [json.load(open(tmp_path / f"rank{r}.json")) for r in range(2)]
    assert ranks[0]["world_size"] == 2

    # 1. negatives from both ranks: logits [B, 2B], columns in rank order, positives offset
    rngs = [np.random.default_rng(100 + r) for r in range(2)]  # as the script draws q, k
    qk = [[rng.standard_normal((B, D)) for _ in range(2)] for rng in rngs]
    all_keys = normalize(np.concatenate([qk[0][1], qk[1][1]]))
    for r in range(2):
        logits = np.array(ranks[r]["logits"])
        assert logits.shape == (B, 2 * B)
        np.testing.assert_allclose(logits, normalize(qk[r][0]) @ all_keys.T / TEMPERATURE,
                                   rtol=1e-4, atol=1e-5)
        assert ranks[r]["labels"] == [r * B + i for i in range(B)]

    # 2. SyncBatchNorm = BatchNorm over the concatenated batch; DataParallel averages the
    #    gradients, so each rank holds the full-batch gradient / world size
    net = paddle.nn.Sequential(paddle.nn.Linear(4, 4), paddle.nn.BatchNorm1D(4))
    net.set_state_dict({k: paddle.to_tensor(v, "float32") for k, v in ranks[0]["init"].items()})
    x = paddle.to_tensor(np.concatenate([r["bn"]["x"] for r in ranks]), "float32")
    w = paddle.to_tensor(np.concatenate([r["bn"]["w"] for r in ranks]), "float32")
    y = net(x)
    (y * w).sum().backward()
    np.testing.assert_allclose(np.concatenate([r["bn"]["y"] for r in ranks]), y.numpy(),
                               rtol=1e-4, atol=1e-4)
    for r in ranks:
        np.testing.assert_allclose(r["bn"]["grad"], net[0].weight.grad.numpy() / 2,
                                   rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(r["bn"]["running_mean"], net[1]._mean.numpy(),
                                   rtol=1e-4, atol=1e-5)

    # 3. the trainer ran two momentum updates and both ranks hold the same weights (BatchNorm
    #    running statistics are each rank's own: this run does not synchronise BN)
    assert ranks[0]["momentum"] == ranks[1]["momentum"] > 0.9
    assert ranks[0]["state"].keys() == ranks[1]["state"].keys()
    weights = [k for k in ranks[0]["state"] if not k.endswith(("_mean", "_variance"))]
    assert any(k.startswith("momentum_encoder.") for k in weights)
    for k in weights:
        v = ranks[0]["state"][k]
        assert abs(v - ranks[1]["state"][k]) <= 1e-4 * max(1.0, abs(v)), k
