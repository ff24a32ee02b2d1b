"""Top-1/top-5 evaluation, exact across any number of processes."""
from __future__ import annotations

import time
from typing import Any, Dict, Optional

import paddle
import paddle.nn.functional as F

from . import distributed as dist
from ..logs import ProgressBar


@paddle.no_grad()
def evaluate(model: paddle.nn.Layer, loader, topk=(1, 5), desc: str = "eval",
             amp: Optional[Dict[str, Any]] = None) -> Dict[str, float]:
    """Loss, top-1 and top-5 (percent) of ``model`` over ``loader``'s whole dataset.

    Each rank scores its share; padding rows (``loader.num_valid``) are dropped and the sums
    are all-reduced, so every sample counts exactly once and the result is the same for one or
    several processes.

    ``amp``: the run's precision, ``{enable, dtype, level}`` as given to
    ``paddle.amp.auto_cast`` (None: float32). The forward pass runs under it, as training
    does: after ``paddle.amp.decorate(level='O2')`` the weights are float16/bfloat16, and
    outside auto_cast the first layer would get float32 images and fail on the dtype.
    """
    was_training = model.training
    model.eval()
    # summed on the device, in float64, and read once at the end: reading every batch would
    # make the host wait for the device before it can queue the next batch
    names = ["loss", *(f"top{k}" for k in topk)]
    sums = paddle.zeros([len(names)], dtype="float64")
    count = 0
    bar = ProgressBar(len(loader), desc=desc)
    start = time.time()
    for k, (images, labels) in enumerate(loader):
        n = loader.num_valid(k)
        if n == 0:
            continue
        with paddle.amp.auto_cast(enable=bool(amp and amp.get("enable")),
                                  dtype=(amp or {}).get("dtype", "float16"),
                                  level=(amp or {}).get("level", "O1")):
            out = model(images)
        logits = out[:n].astype("float32")
        labels = labels[:n].reshape([-1]).astype("int64")
        maxk = min(max(topk), logits.shape[-1])
        pred = paddle.topk(logits, maxk, axis=-1)[1]
        hit = (pred == labels.unsqueeze(1)).astype("float32")
        batch = [F.cross_entropy(logits, labels, reduction="sum").reshape([])]
        batch += [hit[:, :min(t, maxk)].sum() for t in topk]
        sums = sums + paddle.stack(batch).astype("float64")
        count += n
        bar.update(k + 1)
    bar.close()
    sums = paddle.concat([sums, paddle.to_tensor([float(count)], dtype="float64")])
    dist.all_reduce_(sums, "sum")
    totals = dict(zip(names + ["count"], sums.tolist()))  # the one device->host read
    count = max(totals["count"], 1.0)
    if was_training:
        model.train()
    out = {"loss": totals["loss"] / count, "num_samples": int(totals["count"]),
           "seconds": time.time() - start}
    out.update({f"top{t}": 100.0 * totals[f"top{t}"] / count for t in topk})
    return out
