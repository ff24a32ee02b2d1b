"""Independent NumPy (float64) reference of timm's gMLP and ResMLP, for testing passl_mixer.

What this is
------------
A from-scratch, pure-NumPy re-statement of the gMLP and ResMLP models that timm defines in
``timm/models/mlp_mixer.py`` (classes ``MlpMixer``, ``SpatialGatingBlock``,
``SpatialGatingUnit``, ``ResBlock``, ``Affine``; ``GatedMlp`` and ``Mlp`` from
``timm/layers/mlp.py``; ``PatchEmbed`` from ``timm/layers/patch_embed.py``), read from
huggingface/pytorch-image-models at commit 03fa149147b1695dc7ebce06737623d39b7dd34f.
It was written from timm's definition alone, WITHOUT looking at passl_mixer's Paddle code,
so that passl_mixer's gMLP / ResMLP backbones can be tested against it (parameter names,
shapes, and forward outputs).  It imports neither paddle nor torch.

Layouts
-------
Every tensor uses timm's (PyTorch) names and layouts:

* ``nn.Linear`` weights are ``[out_features, in_features]``: ``y = x @ W.T + b``.
  (Paddle's ``nn.Linear`` stores ``[in, out]``: a loader must transpose.)
* The stem is ``stem.proj`` = ``nn.Conv2d(in_chans, C, kernel=p, stride=p)``, weight
  ``[C, in_chans, p, p]``; its output ``[B, C, H/p, W/p]`` is flattened to tokens
  ``[B, S, C]`` row-major over (h, w): token index ``h * (W/p) + w``.
* ResMLP's ``Affine`` parameters ``alpha`` / ``beta`` have shape ``[1, 1, C]`` in timm (the
  official facebookresearch/deit code uses ``[C]``; see ``official_resmlp_to_timm``).

Forward definitions (all float64)
---------------------------------
gMLP (``block_layer=SpatialGatingBlock``, ``mlp_layer=GatedMlp``)::

    x = stem(images)                                   # [B, S, C]
    for each block:  x = x + gated_mlp(LayerNorm_1e-6(x))
        gated_mlp(y) = fc2(sgu(GELU(fc1(y))))          # fc1: C -> C*mlp_ratio
        sgu(z):  u, v = z[..., :D/2], z[..., D/2:]     # torch.chunk(2, dim=-1): u first
                 v = LayerNorm_1e-5(v)                 # nn.LayerNorm default eps
                 v[b, t, c] = sum_s proj.W[t, s] v[b, s, c] + proj.b[t]   # token axis
                 return u * v                          # fc2: D/2 -> C
    x = LayerNorm_1e-6(x); pooled = x.mean(tokens); logits = head(pooled)

ResMLP (``block_layer=ResBlock``, ``norm_layer=Affine``, ``mlp_layer=Mlp``)::

    x = stem(images)
    for each block:
        x = x + ls1 * linear_tokens over the token axis of (norm1.alpha * x + norm1.beta)
        x = x + ls2 * fc2(GELU(fc1(norm2.alpha * x + norm2.beta)))
    x = norm.alpha * x + norm.beta; pooled = x.mean(tokens); logits = head(pooled)

GELU is ``nn.GELU()`` = exact erf form ``0.5 x (1 + erf(x / sqrt 2))``.  No stem norm, no
dropout / drop-path at inference, ``global_pool='avg'`` (mean over tokens), head
``nn.Linear(C, num_classes)`` or absent if ``num_classes == 0``.

Random state dicts
------------------
``timm_gmlp_state_dict`` / ``timm_resmlp_state_dict`` give every parameter a random value
(weights ~ N(0, 1/sqrt(fan_in)), LayerNorm / Affine scales ~ 1 + N(0, 0.1), biases and Affine
shifts ~ N(0, 0.1), LayerScale ~ N(0, 0.3), SGU proj bias ~ 1 + N(0, 0.1) (timm inits it to
1; the noise makes each token's gate bias distinct)) so that no parameter is a no-op.  Values
are generated in float64 and stored as ``dtype`` (float32 by default, like a real checkpoint);
the forwards cast to float64, so a float32 model loaded from the same dict sees exactly the
same numbers as the reference.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np

try:  # scipy is a test dependency here; fall back to math.erf if it is missing
    from scipy.special import erf as _erf
except Exception:  # pragma: no cover
    _erf = np.vectorize(math.erf, otypes=[np.float64])

__all__ = [
    "GMLP_VARIANTS", "RESMLP_VARIANTS", "TIMM_SOURCE",
    "GMLP_BLOCK_NORM_EPS", "GMLP_GATE_NORM_EPS", "GMLP_FINAL_NORM_EPS",
    "timm_gmlp_shapes", "timm_resmlp_shapes", "num_params",
    "timm_gmlp_state_dict", "timm_resmlp_state_dict",
    "gmlp_forward", "resmlp_forward",
    "official_resmlp_to_timm", "timm_resmlp_to_official",
    "gelu", "layer_norm", "linear", "patch_embed", "token_linear",
    "spatial_gating_unit", "gmlp_block", "resmlp_block",
]

TIMM_SOURCE = ("huggingface/pytorch-image-models@03fa149147b1695dc7ebce06737623d39b7dd34f: "
               "timm/models/mlp_mixer.py, timm/layers/mlp.py, timm/layers/patch_embed.py")

# LayerNorm eps values as timm has them for gMLP.
GMLP_BLOCK_NORM_EPS = 1e-6   # SpatialGatingBlock.norm: MlpMixer's norm_layer=partial(LayerNorm, eps=1e-6)
GMLP_GATE_NORM_EPS = 1e-5    # SpatialGatingUnit.norm: plain nn.LayerNorm (PyTorch default eps)
GMLP_FINAL_NORM_EPS = 1e-6   # MlpMixer.norm

# timm registrations (img_size 224, in_chans 3, num_classes 1000 by default).  ``hidden_dim``
# is timm's ``embed_dim``.  The keys splat into the state-dict / shapes functions.
GMLP_VARIANTS = {
    "gmlp_ti16_224": dict(patch_size=16, hidden_dim=128, num_blocks=30, mlp_ratio=6),
    "gmlp_s16_224": dict(patch_size=16, hidden_dim=256, num_blocks=30, mlp_ratio=6),
    "gmlp_b16_224": dict(patch_size=16, hidden_dim=512, num_blocks=30, mlp_ratio=6),
}

# init_values: timm's LayerScale (ls1/ls2) init.  resmlp_12 uses ResBlock's default 1e-4 in
# timm (the official deit code uses init_scale=0.1 for resmlp_12; the others agree: 1e-5,
# 1e-6, 1e-6).  Only matters for fresh initialisation, not for loading weights.
RESMLP_VARIANTS = {
    "resmlp_12_224": dict(patch_size=16, hidden_dim=384, num_blocks=12, mlp_ratio=4, init_values=1e-4),
    "resmlp_24_224": dict(patch_size=16, hidden_dim=384, num_blocks=24, mlp_ratio=4, init_values=1e-5),
    "resmlp_36_224": dict(patch_size=16, hidden_dim=384, num_blocks=36, mlp_ratio=4, init_values=1e-6),
    "resmlp_big_24_224": dict(patch_size=8, hidden_dim=768, num_blocks=24, mlp_ratio=4, init_values=1e-6),
}


# --------------------------------------------------------------------------------------------
# shapes
# --------------------------------------------------------------------------------------------
def _grid(img_size, patch_size):
    if isinstance(img_size, (tuple, list)):
        h, w = int(img_size[0]), int(img_size[1])
    else:
        h = w = int(img_size)
    return h // patch_size, w // patch_size


def _stem_head_shapes(patch_size, hidden_dim, in_chans):
    return [("stem.proj.weight", (hidden_dim, in_chans, patch_size, patch_size)),
            ("stem.proj.bias", (hidden_dim,))]


def timm_gmlp_shapes(patch_size, hidden_dim, num_blocks, mlp_ratio=6, img_size=224, in_chans=3,
                     num_classes=1000):
    """Ordered ``{timm name: shape}`` of a timm gMLP (``MlpMixer`` + ``SpatialGatingBlock``)."""
    gh, gw = _grid(img_size, patch_size)
    seq = gh * gw
    c = int(hidden_dim)
    d = int(c * mlp_ratio)          # GatedMlp hidden width (channel_dim = int(dim * mlp_ratio))
    if d % 2:
        raise ValueError(f"gMLP hidden width {d} must be even (the gate splits it in half)")
    g = d // 2
    shapes = OrderedDict(_stem_head_shapes(patch_size, c, in_chans))
    for i in range(num_blocks):
        p = f"blocks.{i}."
        shapes[p + "norm.weight"] = (c,)
        shapes[p + "norm.bias"] = (c,)
        shapes[p + "mlp_channels.fc1.weight"] = (d, c)
        shapes[p + "mlp_channels.fc1.bias"] = (d,)
        shapes[p + "mlp_channels.gate.norm.weight"] = (g,)
        shapes[p + "mlp_channels.gate.norm.bias"] = (g,)
        shapes[p + "mlp_channels.gate.proj.weight"] = (seq, seq)
        shapes[p + "mlp_channels.gate.proj.bias"] = (seq,)
        shapes[p + "mlp_channels.fc2.weight"] = (c, g)
        shapes[p + "mlp_channels.fc2.bias"] = (c,)
    shapes["norm.weight"] = (c,)
    shapes["norm.bias"] = (c,)
    if num_classes > 0:
        shapes["head.weight"] = (num_classes, c)
        shapes["head.bias"] = (num_classes,)
    return shapes


def timm_resmlp_shapes(patch_size, hidden_dim, num_blocks, mlp_ratio=4, img_size=224, in_chans=3,
                       num_classes=1000, init_values=None):
    """Ordered ``{timm name: shape}`` of a timm ResMLP (``MlpMixer`` + ``ResBlock`` + ``Affine``).

    ``init_values`` is accepted (and ignored) so ``**RESMLP_VARIANTS[name]`` can be splatted.
    """
    del init_values
    gh, gw = _grid(img_size, patch_size)
    seq = gh * gw
    c = int(hidden_dim)
    d = int(c * mlp_ratio)
    shapes = OrderedDict(_stem_head_shapes(patch_size, c, in_chans))
    for i in range(num_blocks):
        p = f"blocks.{i}."
        shapes[p + "norm1.alpha"] = (1, 1, c)
        shapes[p + "norm1.beta"] = (1, 1, c)
        shapes[p + "linear_tokens.weight"] = (seq, seq)
        shapes[p + "linear_tokens.bias"] = (seq,)
        shapes[p + "norm2.alpha"] = (1, 1, c)
        shapes[p + "norm2.beta"] = (1, 1, c)
        shapes[p + "mlp_channels.fc1.weight"] = (d, c)
        shapes[p + "mlp_channels.fc1.bias"] = (d,)
        shapes[p + "mlp_channels.fc2.weight"] = (c, d)
        shapes[p + "mlp_channels.fc2.bias"] = (c,)
        shapes[p + "ls1"] = (c,)
        shapes[p + "ls2"] = (c,)
    shapes["norm.alpha"] = (1, 1, c)
    shapes["norm.beta"] = (1, 1, c)
    if num_classes > 0:
        shapes["head.weight"] = (num_classes, c)
        shapes["head.bias"] = (num_classes,)
    return shapes


def num_params(shapes):
    """Total element count of a ``{name: shape}`` (or ``{name: array}``) mapping."""
    return int(sum(int(np.prod(s if isinstance(s, tuple) else np.shape(s))) for s in shapes.values()))


# --------------------------------------------------------------------------------------------
# random state dicts
# --------------------------------------------------------------------------------------------
def _random_value(rng, name, shape):
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "weight" and len(shape) >= 2:          # Linear [out, in] / Conv [out, in, kh, kw]
        fan_in = int(np.prod(shape[1:]))
        return rng.normal(0.0, 1.0 / math.sqrt(fan_in), size=shape)
    if name.endswith("gate.proj.bias"):               # timm inits this to ones
        return 1.0 + rng.normal(0.0, 0.1, size=shape)
    if leaf in ("weight", "alpha"):                    # LayerNorm weight / Affine alpha
        return 1.0 + rng.normal(0.0, 0.1, size=shape)
    if leaf in ("bias", "beta"):
        return rng.normal(0.0, 0.1, size=shape)
    if leaf in ("ls1", "ls2"):
        return rng.normal(0.0, 0.3, size=shape)
    raise KeyError(f"no randomisation rule for {name}")


def _random_state(rng, shapes, dtype):
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    return OrderedDict((k, np.asarray(_random_value(rng, k, s), dtype=dtype)) for k, s in shapes.items())


def timm_gmlp_state_dict(rng, patch_size, hidden_dim, num_blocks, mlp_ratio=6, img_size=224,
                         in_chans=3, num_classes=1000, dtype=np.float32):
    """Random timm-named gMLP state dict (``OrderedDict`` of NumPy arrays, PyTorch layouts).

    ``rng``: a ``np.random.Generator`` or a seed.  ``num_classes=0`` => no ``head.*`` keys.
    """
    shapes = timm_gmlp_shapes(patch_size, hidden_dim, num_blocks, mlp_ratio, img_size, in_chans,
                              num_classes)
    return _random_state(rng, shapes, dtype)


def timm_resmlp_state_dict(rng, patch_size, hidden_dim, num_blocks, mlp_ratio=4, img_size=224,
                           in_chans=3, num_classes=1000, init_values=None, dtype=np.float32):
    """Random timm-named ResMLP state dict (Affine alpha/beta ``[1, 1, C]``, ls1/ls2 ``[C]``).

    ``init_values`` is accepted for ``**RESMLP_VARIANTS[name]`` splatting; LayerScale is
    randomised (N(0, 0.3)) regardless.
    """
    shapes = timm_resmlp_shapes(patch_size, hidden_dim, num_blocks, mlp_ratio, img_size, in_chans,
                                num_classes)
    return _random_state(rng, shapes, dtype)


# --------------------------------------------------------------------------------------------
# building blocks (float64)
# --------------------------------------------------------------------------------------------
def _f64(a):
    return np.asarray(a, dtype=np.float64)


def gelu(x, approximate="exact"):
    """nn.GELU: ``"exact"`` (erf, timm's default) or ``"tanh"`` (approximate='tanh')."""
    x = _f64(x)
    if approximate in ("exact", "none", None, False):
        return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))
    if approximate in ("tanh", True):
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    raise ValueError(f"unknown GELU form {approximate!r}")


def layer_norm(x, weight, bias, eps):
    """LayerNorm over the last axis, biased variance, eps inside the sqrt (as torch)."""
    x = _f64(x)
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * _f64(weight) + _f64(bias)


def linear(x, weight, bias=None):
    """nn.Linear on the last axis with a PyTorch ``[out, in]`` weight."""
    y = _f64(x) @ _f64(weight).T
    return y if bias is None else y + _f64(bias)


def token_linear(x, weight, bias):
    """nn.Linear(S, S) applied over the token axis of ``x`` [B, S, C] (timm's transpose trick):
    ``y[b, t, c] = sum_s W[t, s] x[b, s, c] + bias[t]``."""
    return np.einsum("ts,bsc->btc", _f64(weight), _f64(x)) + _f64(bias)[None, :, None]


def patch_embed(images_nchw, weight, bias, patch_size):
    """Conv2d(kernel=stride=patch) + flatten(2).transpose(1, 2): NCHW images -> [B, S, C]."""
    x = _f64(images_nchw)
    w = _f64(weight)
    b, cin, h, wd = x.shape
    c, cin_w, ph, pw = w.shape
    if (ph, pw) != (patch_size, patch_size):
        raise ValueError(f"stem weight kernel {(ph, pw)} != patch_size {patch_size}")
    if cin != cin_w:
        raise ValueError(f"images have {cin} channels, stem expects {cin_w}")
    if h % patch_size or wd % patch_size:
        raise ValueError(f"image {h}x{wd} not divisible by patch {patch_size}")
    gh, gw = h // patch_size, wd // patch_size
    patches = x.reshape(b, cin, gh, patch_size, gw, patch_size)      # (b, i, h, kh, w, kw)
    out = np.einsum("bihpwq,oipq->bhwo", patches, w) + _f64(bias)     # [B, gh, gw, C]
    return out.reshape(b, gh * gw, c)                                 # row-major over (h, w)


def spatial_gating_unit(state, prefix, z):
    """timm SpatialGatingUnit; ``prefix`` like ``"blocks.0.mlp_channels.gate."``."""
    z = _f64(z)
    half = z.shape[-1] // 2
    u, v = z[..., :half], z[..., half:]
    v = layer_norm(v, state[prefix + "norm.weight"], state[prefix + "norm.bias"], GMLP_GATE_NORM_EPS)
    v = token_linear(v, state[prefix + "proj.weight"], state[prefix + "proj.bias"])
    return u * v


def gmlp_block(state, i, x, gelu_form="exact"):
    p = f"blocks.{i}."
    y = layer_norm(x, state[p + "norm.weight"], state[p + "norm.bias"], GMLP_BLOCK_NORM_EPS)
    m = p + "mlp_channels."
    y = gelu(linear(y, state[m + "fc1.weight"], state[m + "fc1.bias"]), gelu_form)
    y = spatial_gating_unit(state, m + "gate.", y)
    y = linear(y, state[m + "fc2.weight"], state[m + "fc2.bias"])
    return _f64(x) + y


def _affine(x, alpha, beta):
    return _f64(alpha).reshape(-1) * _f64(x) + _f64(beta).reshape(-1)


def resmlp_block(state, i, x, gelu_form="exact"):
    p = f"blocks.{i}."
    x = _f64(x)
    y = _affine(x, state[p + "norm1.alpha"], state[p + "norm1.beta"])
    y = token_linear(y, state[p + "linear_tokens.weight"], state[p + "linear_tokens.bias"])
    x = x + _f64(state[p + "ls1"]) * y
    y = _affine(x, state[p + "norm2.alpha"], state[p + "norm2.beta"])
    m = p + "mlp_channels."
    y = gelu(linear(y, state[m + "fc1.weight"], state[m + "fc1.bias"]), gelu_form)
    y = linear(y, state[m + "fc2.weight"], state[m + "fc2.bias"])
    return x + _f64(state[p + "ls2"]) * y


def _num_blocks(state):
    idx = {int(k.split(".")[1]) for k in state if k.startswith("blocks.")}
    if idx != set(range(len(idx))):
        raise ValueError(f"block indices not contiguous: {sorted(idx)}")
    return len(idx)


def _check_seq(state, x, key):
    seq = np.shape(state[key])[0]
    if x.shape[1] != seq:
        raise ValueError(f"{x.shape[1]} tokens from the stem but {key} is {np.shape(state[key])}: "
                         "image size does not match the state dict")


def _head(state, pooled):
    if "head.weight" in state:
        return linear(pooled, state["head.weight"], state["head.bias"])
    return None


def gmlp_forward(state, images_nchw, patch_size, gelu="exact", return_tokens=False):
    """timm gMLP forward in float64.

    Returns ``(pooled [B, C], logits [B, classes] or None)``; with ``return_tokens=True``
    returns ``(pooled, logits, tokens)`` where ``tokens`` is the final-normed ``[B, S, C]``.
    """
    gelu_form = gelu
    x = patch_embed(images_nchw, state["stem.proj.weight"], state["stem.proj.bias"], patch_size)
    n = _num_blocks(state)
    if n:
        _check_seq(state, x, "blocks.0.mlp_channels.gate.proj.weight")
    for i in range(n):
        x = gmlp_block(state, i, x, gelu_form)
    x = layer_norm(x, state["norm.weight"], state["norm.bias"], GMLP_FINAL_NORM_EPS)
    pooled = x.mean(axis=1)
    logits = _head(state, pooled)
    return (pooled, logits, x) if return_tokens else (pooled, logits)


def resmlp_forward(state, images_nchw, patch_size, gelu="exact", return_tokens=False):
    """timm ResMLP forward in float64 (timm-named state; see ``official_resmlp_to_timm``).

    Returns ``(pooled [B, C], logits or None)`` (plus final tokens if ``return_tokens``).
    """
    gelu_form = gelu
    x = patch_embed(images_nchw, state["stem.proj.weight"], state["stem.proj.bias"], patch_size)
    n = _num_blocks(state)
    if n:
        _check_seq(state, x, "blocks.0.linear_tokens.weight")
    for i in range(n):
        x = resmlp_block(state, i, x, gelu_form)
    x = _affine(x, state["norm.alpha"], state["norm.beta"])
    pooled = x.mean(axis=1)
    logits = _head(state, pooled)
    return (pooled, logits, x) if return_tokens else (pooled, logits)


# --------------------------------------------------------------------------------------------
# official (facebookresearch/deit resmlp_models.py) <-> timm names
# --------------------------------------------------------------------------------------------
def official_resmlp_to_timm(state):
    """Mirror of timm's ``checkpoint_filter_fn`` (mlp_mixer.py) for Facebook ResMLP weights.

    The official deit code (``resmlp_models.py``: ``resmlp_models`` / ``layers_scale_mlp_blocks``
    / ``Affine``) names things differently.  timm detects it by the key
    ``patch_embed.proj.weight``; if that key is absent the dict is returned unchanged.
    Otherwise each key gets these plain substring replacements, in this order::

        'patch_embed.' -> 'stem.'            patch_embed.proj.{weight,bias} -> stem.proj.*
        'attn.'        -> 'linear_tokens.'   blocks.i.attn.*  (nn.Linear(S, S), token mixing)
        'mlp.'         -> 'mlp_channels.'    blocks.i.mlp.fc1/fc2.*
        'gamma_'       -> 'ls'               blocks.i.gamma_1 / gamma_2 -> ls1 / ls2  ([C])

    and any key ending in ``.alpha`` / ``.beta`` (blocks.i.norm1/norm2 and the final norm
    ``Affine``, official shape ``[C]``) is reshaped to ``[1, 1, C]``.  Everything else
    (norm1/norm2/norm names, head.weight [classes, C], head.bias) passes through.
    """
    if "patch_embed.proj.weight" not in state:
        return state
    out = OrderedDict()
    for k, v in state.items():
        k = k.replace("patch_embed.", "stem.")
        k = k.replace("attn.", "linear_tokens.")
        k = k.replace("mlp.", "mlp_channels.")
        k = k.replace("gamma_", "ls")
        if k.endswith(".alpha") or k.endswith(".beta"):
            v = np.reshape(v, (1, 1, -1))
        out[k] = v
    return out


def timm_resmlp_to_official(state):
    """Inverse of ``official_resmlp_to_timm``: timm ResMLP names -> deit ``resmlp_models`` names
    (``stem.`` -> ``patch_embed.``, ``linear_tokens.`` -> ``attn.``, ``mlp_channels.`` ->
    ``mlp.``, ``blocks.i.ls1/ls2`` -> ``blocks.i.gamma_1/gamma_2``, alpha/beta ``[1,1,C]`` ->
    ``[C]``), to fabricate an official-layout checkpoint for tests."""
    out = OrderedDict()
    for k, v in state.items():
        k = k.replace("stem.", "patch_embed.", 1) if k.startswith("stem.") else k
        k = k.replace(".linear_tokens.", ".attn.")
        k = k.replace(".mlp_channels.", ".mlp.")
        head, _, leaf = k.rpartition(".")
        if leaf in ("ls1", "ls2"):
            k = f"{head}.gamma_{leaf[2:]}"
        if k.endswith(".alpha") or k.endswith(".beta"):
            v = np.reshape(v, (-1,))
        out[k] = v
    return out
