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

import math

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

    def forward(self, x):
        channel_axis = x.ndim - 1 if self._channel_last else 1
        axes = [a for a in range(x.ndim) if a != channel_axis]
        shape = [1] * x.ndim
        shape[channel_axis] = self._num_features
        if self.training:
            c = self._num_features
            count = paddle.full([1], math.prod(x.shape) // c, dtype=x.dtype)
            stats = paddle.concat([x.sum(axis=axes), (x * x).sum(axis=axes), count])
            if dist.get_world_size() > 1:
                stats = _AllReduceSum.apply(stats)
            mean = stats[:c] / stats[2 * c]
            var = stats[c:2 * c] / stats[2 * c] - mean * mean
            with paddle.no_grad():
                m = self._momentum
                self._mean.set_value(self._mean * m + mean.detach() * (1 - m))
                self._variance.set_value(self._variance * m + var.detach() * (1 - m))
        else:
            mean, var = self._mean, self._variance
        y = (x - mean.reshape(shape)) * paddle.rsqrt(var.reshape(shape) + self._epsilon)
        if self.weight is not None:
            y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
        return y

    def extra_repr(self):
        return f"num_features={self._num_features}, momentum={self._momentum}, " \
               f"epsilon={self._epsilon}"


def convert_sync_batchnorm(layer: nn.Layer) -> nn.Layer:
    """Return ``layer`` with every BatchNorm replaced by :class:`SyncBatchNorm` (in place for
    the sublayers; a BatchNorm given directly is returned converted)."""
    if isinstance(layer, _BatchNormBase):
        return SyncBatchNorm(layer)
    for name, child in layer.named_children():
        converted = convert_sync_batchnorm(child)
        if converted is not child:
            setattr(layer, name, converted)
    return layer
