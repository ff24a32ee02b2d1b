// Fused CPU kernels for dygraph training: bias + GELU (both forms) and LayerNorm with their
// gradients, the residual add with stochastic depth, the patch stem's patch copy, and AdamW
// with the gradient clip. Paddle's own CPU kernels for these run on one core and make several
// passes over memory (LayerNorm's gradient costs ~30x its forward); these make one or two
// passes, split the work across the OpenMP threads and leave the vector code to the compiler
// (-O3 -march=native -ffast-math, which also lets GCC call glibc's vector tanhf). Built on
// first use by cpu_kernels.py; every op here has a plain-Paddle twin that runs wherever this
// is not built.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "paddle/extension.h"

namespace {

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCubic = 0.044715f;
constexpr float kSqrtHalf = 0.7071067811865476f;
constexpr float kInvSqrt2Pi = 0.3989422804014327f;

void CheckFloat32Cpu(const paddle::Tensor& t, const char* name) {
  PD_CHECK(t.is_cpu(), name, " must be a CPU tensor");
  PD_CHECK(t.dtype() == paddle::DataType::FLOAT32, name, " must be float32");
}

// `threads` comes from Python: the count Paddle's math uses (a build linked to GCC's libgomp
// would not see Paddle's setting); one thread per ~64k values at most: small tensors are not
// worth waking the other cores for.
int Threads(int threads, int64_t work) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, work / 65536)));
}

// The per-thread partial sums of a parameter gradient added up: `partial` holds `stride`
// floats per thread; the `n` from `offset` on go to `out`.
void SumOverThreads(const std::vector<float>& partial, int threads, int64_t stride,
                    int64_t offset, int64_t n, float* out) {
  for (int64_t j = 0; j < n; ++j) {
    float sum = 0.f;
    for (int t = 0; t < threads; ++t) sum += partial[static_cast<size_t>(t) * stride + offset + j];
    out[j] = sum;
  }
}

}  // namespace

// GELU(x + bias), the bias broadcast over the last axis (bias_axis -1: a channel Linear's
// [..., H] output) or the second-to-last (bias_axis -2: a token Linear's [B, S, C] output,
// one bias per token). The forward and the bias add are one pass; the backward makes the input
// gradient and the bias gradient in one pass. GELU is the tanh approximation (approximate) or
// the erf form.

// GELU(z) and its slope GELU'(z), which share the costly tanh / erf.
template <bool kTanh>
inline float Gelu(float z, float* slope) {
  if (kTanh) {
    const float t = std::tanh(kSqrt2OverPi * (z + kCubic * z * z * z));
    *slope = 0.5f * (1.f + t + z * (1.f - t * t) * kSqrt2OverPi * (1.f + 3.f * kCubic * z * z));
    return 0.5f * z * (1.f + t);
  }
  const float e = std::erf(z * kSqrtHalf);
  *slope = 0.5f * (1.f + e) + z * kInvSqrt2Pi * std::exp(-0.5f * z * z);
  return 0.5f * z * (1.f + e);
}

struct BiasLayout {  // x as rows of `cols`; the bias index of (row, col)
  int64_t rows, cols, tokens;
  bool per_token;
  int64_t size() const { return per_token ? tokens : cols; }
};

BiasLayout Layout(const paddle::Tensor& x, const paddle::Tensor& bias, int bias_axis) {
  CheckFloat32Cpu(x, "x");
  CheckFloat32Cpu(bias, "bias");
  const auto& shape = x.shape();
  PD_CHECK(bias_axis == -1 || (bias_axis == -2 && shape.size() >= 2),
           "bias_axis must be -1 or -2");
  const bool per_token = bias_axis == -2;
  BiasLayout l{x.numel() / shape.back(), shape.back(), per_token ? shape[shape.size() - 2] : 1,
               per_token};
  PD_CHECK(bias.numel() == l.size(), "bias must have ", l.size(), " values");
  return l;
}

// f(i, x[i] + its bias) for every value of x, rows across the threads.
template <typename F>
void EachPlusBias(const float* in, const float* b, const BiasLayout& l, int threads, F f) {
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t r = 0; r < l.rows; ++r) {
    const int64_t row = r * l.cols;
    if (l.per_token) {
      const float br = b[r % l.tokens];
#pragma omp simd
      for (int64_t c = 0; c < l.cols; ++c) f(row + c, in[row + c] + br);
    } else {
#pragma omp simd
      for (int64_t c = 0; c < l.cols; ++c) f(row + c, in[row + c] + b[c]);
    }
  }
}

// Out = GELU(x + bias), and Slope = its slope (the gradient's only need: the backward is then
// one multiply per value, no tanh / erf, and x need not be kept for it).
std::vector<paddle::Tensor> BiasGeluForward(const paddle::Tensor& x, const paddle::Tensor& bias,
                                            bool approximate, int bias_axis, int threads) {
  const BiasLayout l = Layout(x, bias, bias_axis);
  auto out = paddle::empty_like(x);
  auto slope = paddle::empty_like(x);
  float* y = out.data<float>();
  float* s = slope.data<float>();
  threads = Threads(threads, x.numel());
  if (approximate) {
    EachPlusBias(x.data<float>(), bias.data<float>(), l, threads,
                 [=](int64_t i, float z) { y[i] = Gelu<true>(z, s + i); });
  } else {
    EachPlusBias(x.data<float>(), bias.data<float>(), l, threads,
                 [=](int64_t i, float z) { y[i] = Gelu<false>(z, s + i); });
  }
  return {out, slope};
}

// x + bias (a Linear's product and its bias; Paddle's broadcast add runs on one core). No
// gradient op: the Linears' PyLayers make their own gradients.
std::vector<paddle::Tensor> AddBias(const paddle::Tensor& x, const paddle::Tensor& bias,
                                    int bias_axis, int threads) {
  const BiasLayout l = Layout(x, bias, bias_axis);
  auto out = paddle::empty_like(x);
  float* y = out.data<float>();
  EachPlusBias(x.data<float>(), bias.data<float>(), l, Threads(threads, x.numel()),
               [=](int64_t i, float z) { y[i] = z; });
  return {out};
}

void BiasGeluGradRows(const float* slope, const float* g, float* dx, float* partial,
                      const BiasLayout& l, int threads) {
#pragma omp parallel num_threads(threads)
  {
    float* db = partial + static_cast<size_t>(omp_get_thread_num()) * l.size();
#pragma omp for schedule(static)
    for (int64_t r = 0; r < l.rows; ++r) {
      const float* sr = slope + r * l.cols;
      const float* gr = g + r * l.cols;
      float* dxr = dx + r * l.cols;
      if (l.per_token) {
        float sum = 0.f;
#pragma omp simd reduction(+ : sum)
        for (int64_t c = 0; c < l.cols; ++c) {
          dxr[c] = gr[c] * sr[c];
          sum += dxr[c];
        }
        db[r % l.tokens] += sum;
      } else {
#pragma omp simd
        for (int64_t c = 0; c < l.cols; ++c) {
          dxr[c] = gr[c] * sr[c];
          db[c] += dxr[c];
        }
      }
    }
  }
}

std::vector<paddle::Tensor> BiasGeluBackward(const paddle::Tensor& bias,
                                             const paddle::Tensor& slope,
                                             const paddle::Tensor& grad_out, int bias_axis,
                                             int threads) {
  CheckFloat32Cpu(grad_out, "grad_out");
  const BiasLayout l = Layout(slope, bias, bias_axis);
  auto grad_x = paddle::empty_like(slope);
  auto grad_bias = paddle::empty_like(bias);
  threads = Threads(threads, slope.numel());
  // each thread sums its rows' bias gradient apart; the sums are added at the end
  std::vector<float> partial(static_cast<size_t>(threads) * l.size(), 0.f);
  BiasGeluGradRows(slope.data<float>(), grad_out.data<float>(), grad_x.data<float>(),
                   partial.data(), l, threads);
  SumOverThreads(partial, threads, l.size(), 0, l.size(), grad_bias.data<float>());
  return {grad_x, grad_bias};
}

// LayerNorm over the last axis; also returns each row's mean and 1/std for the gradient.
std::vector<paddle::Tensor> LayerNormForward(const paddle::Tensor& x, const paddle::Tensor& scale,
                                             const paddle::Tensor& bias, float epsilon,
                                             int threads) {
  CheckFloat32Cpu(x, "x");
  const int64_t cols = x.shape().back();
  const int64_t rows = x.numel() / cols;
  PD_CHECK(scale.numel() == cols && bias.numel() == cols, "scale and bias must have ", cols,
           " values");
  auto out = paddle::empty_like(x);
  auto mean = paddle::empty({rows}, paddle::DataType::FLOAT32, paddle::CPUPlace());
  auto rstd = paddle::empty({rows}, paddle::DataType::FLOAT32, paddle::CPUPlace());
  const float* in = x.data<float>();
  const float* w = scale.data<float>();
  const float* b = bias.data<float>();
  float* y = out.data<float>();
  float* mu = mean.data<float>();
  float* rs = rstd.data<float>();
#pragma omp parallel for schedule(static) num_threads(Threads(threads, rows * cols))
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = in + r * cols;
    float sum = 0.f;
#pragma omp simd reduction(+ : sum)
    for (int64_t c = 0; c < cols; ++c) sum += xr[c];
    const float m = sum / cols;
    float sq = 0.f;  // two passes: the variance of (x - mean), stable for large means
#pragma omp simd reduction(+ : sq)
    for (int64_t c = 0; c < cols; ++c) sq += (xr[c] - m) * (xr[c] - m);
    const float inv = 1.f / std::sqrt(sq / cols + epsilon);
    float* yr = y + r * cols;
#pragma omp simd
    for (int64_t c = 0; c < cols; ++c) yr[c] = (xr[c] - m) * inv * w[c] + b[c];
    mu[r] = m;
    rs[r] = inv;
  }
  return {out, mean, rstd};
}

std::vector<paddle::Tensor> LayerNormBackward(const paddle::Tensor& x, const paddle::Tensor& scale,
                                              const paddle::Tensor& mean,
                                              const paddle::Tensor& rstd,
                                              const paddle::Tensor& grad_out, int threads) {
  CheckFloat32Cpu(grad_out, "grad_out");
  const int64_t cols = x.shape().back();
  const int64_t rows = x.numel() / cols;
  auto grad_x = paddle::empty_like(x);
  auto grad_scale = paddle::empty({cols}, paddle::DataType::FLOAT32, paddle::CPUPlace());
  auto grad_bias = paddle::empty({cols}, paddle::DataType::FLOAT32, paddle::CPUPlace());
  const float* in = x.data<float>();
  const float* w = scale.data<float>();
  const float* mu = mean.data<float>();
  const float* rs = rstd.data<float>();
  const float* g = grad_out.data<float>();
  float* dx = grad_x.data<float>();
  threads = Threads(threads, rows * cols);
  // each thread sums its rows' scale and bias gradients apart; the sums are added at the end
  std::vector<float> partial(static_cast<size_t>(threads) * 2 * cols, 0.f);
#pragma omp parallel num_threads(threads)
  {
    float* dw = partial.data() + static_cast<size_t>(omp_get_thread_num()) * 2 * cols;
    float* db = dw + cols;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = in + r * cols;
      const float* gr = g + r * cols;
      const float m = mu[r], inv = rs[r];
      float mean_gw = 0.f, mean_gw_xhat = 0.f;
#pragma omp simd reduction(+ : mean_gw, mean_gw_xhat)
      for (int64_t c = 0; c < cols; ++c) {
        const float xhat = (xr[c] - m) * inv;
        const float gw = gr[c] * w[c];
        mean_gw += gw;
        mean_gw_xhat += gw * xhat;
        dw[c] += gr[c] * xhat;
        db[c] += gr[c];
      }
      mean_gw /= cols;
      mean_gw_xhat /= cols;
      float* dxr = dx + r * cols;
#pragma omp simd
      for (int64_t c = 0; c < cols; ++c) {
        const float xhat = (xr[c] - m) * inv;
        dxr[c] = inv * (gr[c] * w[c] - mean_gw - xhat * mean_gw_xhat);
      }
    }
  }
  SumOverThreads(partial, threads, 2 * cols, 0, cols, grad_scale.data<float>());
  SumOverThreads(partial, threads, 2 * cols, cols, cols, grad_bias.data<float>());
  return {grad_x, grad_scale, grad_bias};
}

// A residual connection with stochastic depth: x + scale[b] * y over [B, ...] tensors, scale
// one value per sample (DropPath's mask / keep; absent: 1); without x, scale[b] * y (the
// branch's gradient). Paddle's add, multiply and scale run on one core, three passes for
// x + y * mask / keep; this is one pass on all of them.
void AddScaledRows(const float* x, const float* y, const float* scale, int64_t n,
                   int64_t per_sample, int threads, float* out) {
#pragma omp parallel num_threads(Threads(threads, n))
  {
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t end = n * (t + 1) / nt;
    for (int64_t i = n * t / nt; i < end;) {  // this thread's range, a sample at a time
      const int64_t sample = i / per_sample;
      const int64_t stop = std::min(end, (sample + 1) * per_sample);
      const float s = scale ? scale[sample] : 1.f;
      if (x) {
#pragma omp simd
        for (int64_t k = i; k < stop; ++k) out[k] = x[k] + s * y[k];
      } else {
#pragma omp simd
        for (int64_t k = i; k < stop; ++k) out[k] = s * y[k];
      }
      i = stop;
    }
  }
}

std::vector<paddle::Tensor> ResidualAdd(const paddle::optional<paddle::Tensor>& x,
                                        const paddle::Tensor& y,
                                        const paddle::optional<paddle::Tensor>& scale,
                                        int threads) {
  CheckFloat32Cpu(y, "y");
  PD_CHECK(y.shape().size() >= 1 && y.shape()[0] > 0, "y must have a batch axis");
  const int64_t batch = y.shape()[0];
  if (x) {
    CheckFloat32Cpu(*x, "x");
    PD_CHECK(x->shape() == y.shape(), "x and y must have the same shape");
  }
  if (scale) {
    CheckFloat32Cpu(*scale, "scale");
    PD_CHECK(scale->numel() == batch, "scale must hold one value per sample");
  }
  auto out = paddle::empty(y.shape(), paddle::DataType::FLOAT32, paddle::CPUPlace());
  AddScaledRows(x ? x->data<float>() : nullptr, y.data<float>(),
                scale ? scale->data<float>() : nullptr, y.numel(), y.numel() / batch, threads,
                out.data<float>());
  return {out};
}

// The patch stem's input as rows of patches: x [B, C, H, W] -> [B, (H/p) (W/p), C p p], patch
// (gh, gw) in row-major order, each patch's values in (c, i, j) order (a [out, C, p, p]
// convolution kernel's). Paddle's transpose + reshape makes this copy on one core, a value at
// a time (42 ms for a batch of 16 at 224 px); this copies runs of p values, rows of patches
// across the threads. `to_image` does the inverse (the gradient).
template <bool kToImage>
void CopyPatches(float* image, float* patches, int64_t batch, int64_t channels, int64_t height,
                 int64_t width, int64_t p, int threads) {
  const int64_t grid_h = height / p, grid_w = width / p, patch = channels * p * p;
#pragma omp parallel for num_threads(Threads(threads, batch * channels * height * width)) \
    schedule(static)
  for (int64_t row = 0; row < batch * grid_h; ++row) {
    const int64_t b = row / grid_h, gh = row % grid_h;
    for (int64_t gw = 0; gw < grid_w; ++gw) {
      float* dst = patches + ((b * grid_h + gh) * grid_w + gw) * patch;
      for (int64_t c = 0; c < channels; ++c) {
        for (int64_t i = 0; i < p; ++i) {
          float* src = image + ((b * channels + c) * height + gh * p + i) * width + gw * p;
          float* run = dst + (c * p + i) * p;
          if (kToImage) {
            std::copy(run, run + p, src);
          } else {
            std::copy(src, src + p, run);
          }
        }
      }
    }
  }
}

std::vector<paddle::Tensor> Patchify(const paddle::Tensor& x, int patch_size, int threads) {
  CheckFloat32Cpu(x, "x");
  const auto& s = x.shape();
  PD_CHECK(s.size() == 4 && s[2] % patch_size == 0 && s[3] % patch_size == 0,
           "x must be [B, C, H, W] with H and W multiples of patch_size");
  const int64_t p = patch_size;
  auto out = paddle::empty({s[0], (s[2] / p) * (s[3] / p), s[1] * p * p},
                           paddle::DataType::FLOAT32, paddle::CPUPlace());
  CopyPatches<false>(const_cast<float*>(x.data<float>()), out.data<float>(), s[0], s[1], s[2],
                     s[3], p, threads);
  return {out};
}

std::vector<paddle::Tensor> PatchifyBackward(const paddle::Tensor& x, const paddle::Tensor& grad,
                                             int patch_size, int threads) {
  CheckFloat32Cpu(grad, "grad_out");
  const auto& s = x.shape();
  auto grad_x = paddle::empty(s, paddle::DataType::FLOAT32, paddle::CPUPlace());
  CopyPatches<true>(grad_x.data<float>(), const_cast<float*>(grad.data<float>()), s[0], s[1],
                    s[2], s[3], patch_size, threads);
  return {grad_x};
}

// One AdamW step over every parameter, with the global-norm gradient clip folded in: Paddle
// clips with a multiply per gradient (one core, a read and a write of every gradient) and then
// runs one adamw kernel per parameter (one core each). Here: a pass that sums the squared
// gradients, then one pass per parameter that scales the gradient, updates both moments and
// the parameter, all split across the threads. The update is Paddle's adamw kernel's:
//   decoupled decay p *= 1 - lr * coeff, then m1 = b1 m1 + (1 - b1) g,
//   m2 = b2 m2 + (1 - b2) g^2, p -= lr sqrt(1 - b2^t) / (1 - b1^t) m1 / (sqrt(m2) + eps
//   sqrt(1 - b2^t)), and the accumulated powers b1^t, b2^t multiplied by b1, b2.
// lrs: each parameter's learning rate; decays: each one's decay coefficient (0: none);
// clip_norm: the global-norm bound (0: no clipping). Parameters, moments and powers are
// updated in place through their data (Paddle refuses an in-place map on leaf parameters that
// want gradients, which the optimizer's own kernels bypass); the output is the gradients'
// global norm before clipping (0 without clipping, which needs no norm).
std::vector<paddle::Tensor> AdamW(const std::vector<paddle::Tensor>& params,
                                  const std::vector<paddle::Tensor>& grads,
                                  const std::vector<paddle::Tensor>& moment1,
                                  const std::vector<paddle::Tensor>& moment2,
                                  const std::vector<paddle::Tensor>& beta1_pow,
                                  const std::vector<paddle::Tensor>& beta2_pow,
                                  const std::vector<float>& lrs, const std::vector<float>& decays,
                                  float beta1, float beta2, float epsilon, float clip_norm,
                                  int threads) {
  const size_t n = params.size();
  PD_CHECK(grads.size() == n && moment1.size() == n && moment2.size() == n &&
               beta1_pow.size() == n && beta2_pow.size() == n && lrs.size() == n &&
               decays.size() == n,
           "one gradient, two moments, two powers, a learning rate and a decay per parameter");
  for (size_t k = 0; k < n; ++k) {
    CheckFloat32Cpu(params[k], "param");
    CheckFloat32Cpu(grads[k], "grad");
    PD_CHECK(grads[k].numel() == params[k].numel() && moment1[k].numel() == params[k].numel() &&
                 moment2[k].numel() == params[k].numel(),
             "a gradient or moment differs in size from its parameter");
  }
  double squares = 0.0;  // only when clipping: nothing else reads the norm
  for (size_t k = 0; clip_norm > 0.f && k < n; ++k) {
    const float* g = grads[k].data<float>();
    const int64_t size = grads[k].numel();
#pragma omp parallel for num_threads(Threads(threads, size)) reduction(+ : squares) \
    schedule(static)
    for (int64_t i = 0; i < size; ++i) squares += static_cast<double>(g[i]) * g[i];
  }
  const float norm = static_cast<float>(std::sqrt(squares));
  // a NaN norm makes a NaN scale: the parameters become NaN, as with Paddle's clip
  const float scale = clip_norm > 0.f ? clip_norm / std::max(norm, clip_norm) : 1.f;
  for (size_t k = 0; k < n; ++k) {
    float* p = const_cast<float*>(params[k].data<float>());
    const float* g = grads[k].data<float>();
    float* m1 = const_cast<float*>(moment1[k].data<float>());
    float* m2 = const_cast<float*>(moment2[k].data<float>());
    float* b1p = const_cast<float*>(beta1_pow[k].data<float>());
    float* b2p = const_cast<float*>(beta2_pow[k].data<float>());
    const float lr = lrs[k];
    const float keep = 1.f - lr * decays[k];
    const float step = lr * std::sqrt(1.f - b2p[0]) / (1.f - b1p[0]);
    const float eps = epsilon * std::sqrt(1.f - b2p[0]);
    const int64_t size = params[k].numel();
#pragma omp parallel for simd num_threads(Threads(threads, size)) schedule(static)
    for (int64_t i = 0; i < size; ++i) {
      const float gi = g[i] * scale;
      const float a = beta1 * m1[i] + (1.f - beta1) * gi;
      const float b = beta2 * m2[i] + (1.f - beta2) * gi * gi;
      m1[i] = a;
      m2[i] = b;
      p[i] = p[i] * keep - step * a / (std::sqrt(b) + eps);
    }
    b1p[0] *= beta1;
    b2p[0] *= beta2;
  }
  auto out = paddle::full({1}, norm, paddle::DataType::FLOAT32, paddle::CPUPlace());
  return {out};
}

PD_BUILD_OP(mixer_bias_gelu)
    .Inputs({"X", "Bias"})
    .Outputs({"Out", "Slope"})
    .Attrs({"approximate: bool", "bias_axis: int", "threads: int"})
    .SetKernelFn(PD_KERNEL(BiasGeluForward));

// the gradient keeps the slope, not X (the same memory, no transcendental in the backward)
PD_BUILD_GRAD_OP(mixer_bias_gelu)
    .Inputs({"Bias", "Slope", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("Bias")})
    .Attrs({"bias_axis: int", "threads: int"})
    .SetKernelFn(PD_KERNEL(BiasGeluBackward));

PD_BUILD_OP(mixer_layer_norm)
    .Inputs({"X", "Scale", "Bias"})
    .Outputs({"Out", "Mean", "Rstd"})
    .Attrs({"epsilon: float", "threads: int"})
    .SetKernelFn(PD_KERNEL(LayerNormForward));

PD_BUILD_GRAD_OP(mixer_layer_norm)
    .Inputs({"X", "Scale", "Mean", "Rstd", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("Scale"), paddle::Grad("Bias")})
    .Attrs({"threads: int"})
    .SetKernelFn(PD_KERNEL(LayerNormBackward));

PD_BUILD_OP(mixer_residual_add)
    .Inputs({paddle::Optional("X"), "Y", paddle::Optional("Scale")})
    .Outputs({"Out"})
    .Attrs({"threads: int"})
    .SetKernelFn(PD_KERNEL(ResidualAdd));

PD_BUILD_OP(mixer_patchify)
    .Inputs({"X"})
    .Outputs({"Out"})
    .Attrs({"patch_size: int", "threads: int"})
    .SetKernelFn(PD_KERNEL(Patchify));

PD_BUILD_GRAD_OP(mixer_patchify)
    .Inputs({"X", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X")})
    .Attrs({"patch_size: int", "threads: int"})
    .SetKernelFn(PD_KERNEL(PatchifyBackward));

PD_BUILD_OP(mixer_adamw)
    .Inputs({paddle::Vec("Param"), paddle::Vec("Grad"), paddle::Vec("Moment1"),
             paddle::Vec("Moment2"), paddle::Vec("Beta1Pow"), paddle::Vec("Beta2Pow")})
    .Outputs({"GradNorm"})
    .Attrs({"lrs: std::vector<float>", "decays: std::vector<float>", "beta1: float",
            "beta2: float", "epsilon: float", "clip_norm: float", "threads: int"})
    .SetKernelFn(PD_KERNEL(AdamW));

PD_BUILD_OP(mixer_add_bias)
    .Inputs({"X", "Bias"})
    .Outputs({"Out"})
    .Attrs({"bias_axis: int", "threads: int"})
    .SetKernelFn(PD_KERNEL(AddBias));
