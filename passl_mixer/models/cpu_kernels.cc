// Fused CPU kernels for dygraph training: bias + GELU (both forms) and LayerNorm, with their
// gradients. Paddle's own CPU kernels for these run on one core and make several passes over
// memory (LayerNorm's gradient costs ~30x its forward); these make one or two passes, split
// rows across the OpenMP threads and leave the vector code to the compiler (-O3 -march=native
// -ffast-math, which also lets GCC call glibc's vector tanhf). Built on first use by
// cpu_kernels.py; every op here has a plain-Paddle twin that runs wherever this is not built.
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
template <bool kTanh>
inline float Gelu(float z) {
  return kTanh ? 0.5f * z * (1.f + std::tanh(kSqrt2OverPi * (z + kCubic * z * z * z)))
               : 0.5f * z * (1.f + std::erf(z * kSqrtHalf));
}

template <bool kTanh>
inline float GeluSlope(float z) {
  if (kTanh) {
    const float t = std::tanh(kSqrt2OverPi * (z + kCubic * z * z * z));
    return 0.5f * (1.f + t + z * (1.f - t * t) * kSqrt2OverPi * (1.f + 3.f * kCubic * z * z));
  }
  return 0.5f * (1.f + std::erf(z * kSqrtHalf)) + z * kInvSqrt2Pi * std::exp(-0.5f * z * z);
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

template <bool kTanh>
void BiasGeluRows(const float* in, const float* b, float* y, const BiasLayout& l, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t r = 0; r < l.rows; ++r) {
    const float* xr = in + r * l.cols;
    float* yr = y + r * l.cols;
    if (l.per_token) {
      const float br = b[r % l.tokens];
#pragma omp simd
      for (int64_t c = 0; c < l.cols; ++c) yr[c] = Gelu<kTanh>(xr[c] + br);
    } else {
#pragma omp simd
      for (int64_t c = 0; c < l.cols; ++c) yr[c] = Gelu<kTanh>(xr[c] + b[c]);
    }
  }
}

std::vector<paddle::Tensor> BiasGeluForward(const paddle::Tensor& x, const paddle::Tensor& bias,
                                            bool approximate, int bias_axis, int threads) {
  const BiasLayout l = Layout(x, bias, bias_axis);
  auto out = paddle::empty_like(x);
  threads = Threads(threads, x.numel());
  (approximate ? BiasGeluRows<true> : BiasGeluRows<false>)(
      x.data<float>(), bias.data<float>(), out.data<float>(), l, threads);
  return {out};
}

template <bool kTanh>
void BiasGeluGradRows(const float* in, const float* b, const float* g, float* dx, float* partial,
                      const BiasLayout& l, int threads) {
#pragma omp parallel num_threads(threads)
  {
    float* db = partial + static_cast<size_t>(omp_get_thread_num()) * l.size();
#pragma omp for schedule(static)
    for (int64_t r = 0; r < l.rows; ++r) {
      const float* xr = in + r * l.cols;
      const float* gr = g + r * l.cols;
      float* dxr = dx + r * l.cols;
      if (l.per_token) {
        const float br = b[r % l.tokens];
        float sum = 0.f;
#pragma omp simd reduction(+ : sum)
        for (int64_t c = 0; c < l.cols; ++c) {
          dxr[c] = gr[c] * GeluSlope<kTanh>(xr[c] + br);
          sum += dxr[c];
        }
        db[r % l.tokens] += sum;
      } else {
#pragma omp simd
        for (int64_t c = 0; c < l.cols; ++c) {
          dxr[c] = gr[c] * GeluSlope<kTanh>(xr[c] + b[c]);
          db[c] += dxr[c];
        }
      }
    }
  }
}

std::vector<paddle::Tensor> BiasGeluBackward(const paddle::Tensor& x, const paddle::Tensor& bias,
                                             const paddle::Tensor& grad_out, bool approximate,
                                             int bias_axis, int threads) {
  CheckFloat32Cpu(grad_out, "grad_out");
  const BiasLayout l = Layout(x, bias, bias_axis);
  auto grad_x = paddle::empty_like(x);
  auto grad_bias = paddle::empty_like(bias);
  threads = Threads(threads, x.numel());
  // each thread sums its rows' bias gradient apart; the sums are added at the end
  std::vector<float> partial(static_cast<size_t>(threads) * l.size(), 0.f);
  (approximate ? BiasGeluGradRows<true> : BiasGeluGradRows<false>)(
      x.data<float>(), bias.data<float>(), grad_out.data<float>(), grad_x.data<float>(),
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

PD_BUILD_OP(mixer_bias_gelu)
    .Inputs({"X", "Bias"})
    .Outputs({"Out"})
    .Attrs({"approximate: bool", "bias_axis: int", "threads: int"})
    .SetKernelFn(PD_KERNEL(BiasGeluForward));

PD_BUILD_GRAD_OP(mixer_bias_gelu)
    .Inputs({"X", "Bias", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("Bias")})
    .Attrs({"approximate: bool", "bias_axis: int", "threads: int"})
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
