"""Batch normalisation over the global batch of all data-parallel ranks, on CPU and GPU.

MoCo v3 and BYOL normalise their projector / predictor activations with statistics of the whole
batch, not of each device's share. ``paddle.nn.SyncBatchNorm`` does that, but its kernel exists
only for GPUs (``The kernel `sync_batch_norm` is not registered`` on CPU), so this layer
computes the statistics with collectives that every backend has (gloo, NCCL):

    per rank: [sum(x), sum(x * x), count] per channel  --all_reduce-->  global mean and variance

The all-reduce is differentiable (its backward all-reduces the gradient), so every rank's
gradient also accounts for the other ranks' samples, as in a single process with the whole
batch. In one process, or in eval mode (running statistics), it is a plain BatchNorm.

:func:`convert_sync_batchnorm` swaps every ``BatchNorm1D/2D/3D`` of a model for this layer,
keeping its parameters and state-dict keys (``weight``, ``bias``, ``_mean``, ``_variance``).
"""
from __future__ import annotations

import paddle
import paddle.distributed as dist
import paddle.nn as nn
from paddle.autograd import PyLayer
from paddle.nn.layer.norm import _BatchNormBase


class _AllReduceSum(PyLayer):
    """Sum a tensor over ranks; the gradient of every rank's input is the sum of the output
    gradients of all ranks, because every rank's output depends on it."""

    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class SyncBatchNorm(nn.Layer):
    """A BatchNorm whose training statistics are those of the global batch (see module doc).

    Built from an existing ``BatchNorm1D/2D/3D`` layer, whose parameters it takes over; the
    running statistics follow Paddle's rule ``running = momentum * running + (1 - momentum) *
    batch`` with the biased batch variance, as ``nn.BatchNorm`` does.
    """

    def __init__(self, bn: _BatchNormBase):
        super().__init__()
        self._num_features = bn._num_features
        self._momentum = bn._momentum
        self._epsilon = bn._epsilon
        self._channel_last = bn._data_format in ("NLC", "NHWC", "NDHWC")
        self.weight, self.bias = bn.weight, bn.bias
        self._mean, self._variance = bn._mean, bn._variance
        # paddle.amp.decorate(level='O2') keeps float32 only for Paddle's own norm types, or a
        # layer whose _cast_to_low_precision is False (what its excluded_layers argument sets):
        # statistics, running buffers and the affine parameters stay float32, as Paddle's.
        self._cast_to_low_precision = False

    def forward(self, x):
        # Statistics, running buffers and parameters stay float32 whatever the input's dtype:
        # under AMP a float16 sum of squares over a batch overflows (and bfloat16 keeps 8 bits),
        # so the input is cast up and the output back, as Paddle's own BatchNorm kernels do.
        in_dtype = x.dtype
        if in_dtype != paddle.float32:
            x = x.astype("float32")
        channel_axis = x.ndim - 1 if self._channel_last else 1
        axes = [a for a in range(x.ndim) if a != channel_axis]
        shape = [1] * x.ndim
        shape[channel_axis] = self._num_features
        if self.training:
            c = self._num_features
            # from paddle.numel, not x.shape: under paddle.jit.to_static the batch size may be
            # unknown (-1) when the graph is built
            count = (paddle.numel(x) // c).astype("float32").reshape([1])
            stats = paddle.concat([x.sum(axis=axes), (x * x).sum(axis=axes), count])
            if dist.get_world_size() > 1:
                stats = _AllReduceSum.apply(stats)
            mean = stats[:c] / stats[2 * c]
            var = stats[c:2 * c] / stats[2 * c] - mean * mean
            with paddle.no_grad():
                m = self._momentum
                # paddle.assign(..., output=buffer) writes the buffer in place in dygraph and
                # as an in-place op under paddle.jit.to_static; Tensor.set_value does not exist
                # on a static-graph value, and in-place methods (scale_/add_) on the buffer are
                # silently dropped from the to_static program (the statistics never move).
                # No .detach(): no_grad already keeps this out of the graph, and under
                # to_static detach is a memory-sharing op (share_data_) the multi-threaded
                # executor does not order after the value's producer, so the update
                # sometimes read the variance before it was computed (a race seen on CPU).
                paddle.assign(self._mean * m + mean * (1 - m), output=self._mean)
                paddle.assign(self._variance * m + var * (1 - m), output=self._variance)
        else:
            mean, var = self._mean, self._variance
        y = (x - mean.reshape(shape)) * paddle.rsqrt(var.reshape(shape) + self._epsilon)
        if self.weight is not None:
            y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
        return y if in_dtype == paddle.float32 else y.astype(in_dtype)

    def extra_repr(self):
        return f"num_features={self._num_features}, momentum={self._momentum}, " \
               f"epsilon={self._epsilon}"


def convert_sync_batchnorm(layer: nn.Layer) -> nn.Layer:
    """Return ``layer`` with every BatchNorm replaced by :class:`SyncBatchNorm` (in place for
    the sublayers; a BatchNorm given directly is returned converted).

    On a GPU, Paddle's own ``nn.SyncBatchNorm`` is used instead: one fused CUDA kernel over
    NCCL, the same state-dict keys, and kept float32 by AMP O2. Its kernel exists only in CUDA
    builds (on CPU: ``The kernel `sync_batch_norm` is not registered``), hence ours elsewhere."""
    if paddle.is_compiled_with_cuda() and paddle.get_device().startswith("gpu"):
        return nn.SyncBatchNorm.convert_sync_batchnorm(layer)
    if isinstance(layer, _BatchNormBase):
        return SyncBatchNorm(layer)
    for name, child in layer.named_children():
        converted = convert_sync_batchnorm(child)
        if converted is not child:
            setattr(layer, name, converted)
    return layer


@paddle.no_grad()
def average_batchnorm_stats(*layers) -> None:
    """Replace every BatchNorm's running mean and variance in ``layers`` (None entries are
    skipped) by their average over the data-parallel ranks; a no-op in one process.

    Without ``distributed.sync_bn`` each rank updates its running statistics from its own share
    of the data, so they drift apart: evaluation on N ranks would normalise each rank's shard
    with different statistics, and a checkpoint (written by rank 0) would hold rank 0's alone.
    The trainer calls this on every rank before evaluating and before saving, so evaluated and
    saved statistics are the same, on every rank. Averaging the variances (not pooling them)
    is the usual choice (as timm's ``distribute_bn``): the ranks' means differ only by
    sampling noise. Collective: every rank must call it with the same layers."""
    world = dist.get_world_size()
    if world < 2:
        return
    buffers = []
    for layer in layers:
        if layer is None:
            continue
        for sub in layer.sublayers(include_self=True):
            # paddle.nn.BatchNorm (the old API) is not a _BatchNormBase
            if isinstance(sub, (_BatchNormBase, nn.BatchNorm, SyncBatchNorm)):
                buffers += [b for b in (sub._mean, sub._variance) if b is not None]
    if not buffers:
        return
    flat = paddle.concat([b.astype("float32").flatten() for b in buffers])
    dist.all_reduce(flat)
    flat = flat / world
    offset = 0
    for b in buffers:
        n = int(b.numel())
        b.set_value(flat[offset:offset + n].reshape(b.shape).astype(b.dtype))
        offset += n
