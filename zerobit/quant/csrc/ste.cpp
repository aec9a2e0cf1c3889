// SPDX-License-Identifier: Apache-2.0
// Fused CPU kernels behind zerobit.quant.ste's mixtures: one pass over the tensor per direction.
//
// Activations (mixed_act_quant). Contract with the pure-torch path of zerobit/quant/ste.py (the
// tests check it bit for bit):
// every candidate computes u = x / s in the dtype of x (an IEEE division, never a multiplication
// by a reciprocal), rounds half to even with std::nearbyint (torch.round) and clamps with NaN and
// -0.0 passed through (torch.clamp); the forward sums (w_q * code_q) in candidate order, the
// first term not added to zero. grad_x uses a fused multiply-add exactly where torch's
// vectorized `add_(tmp, alpha=theta)` does (builds with FMA, like torch's AVX2/AVX512 kernels).
// Build with -ffp-contract=off: a contracted `acc + w * code` would round once where torch
// rounds twice.
//
// The per-candidate sums of the backward pass are accumulated in double (the AVX2 float32 path:
// in float32 vector lanes over each 512-element block, then in double), per fixed chunk of
// elements and then over the chunks in order, so they do not depend on the number of threads.
//
// Weights (mixed_weight_quant), one output channel at a time, on one thread (weights are small):
// m = max |W[c]| (1 if 0), s = m / n_p, codes = clamp(round(W / s), -n_p, n_p), and the forward
// sums (probs[p, c] * s) * codes over the candidates in order, starting from +0.0 as torch's
// zeros_like().add_() does; the backward pass returns sum_c(g * codes) * s per candidate.
//
// A plain C ABI (no torch headers) keeps the first-use build to a couple of seconds; the caller
// (zerobit/quant/_native.py) validates dtypes, devices and contiguity and owns every buffer.
// Threads come from the OpenMP runtime that torch itself uses (libgomp.so.1 is loaded once per
// process), as many as torch uses, split like at::parallel_for: one range of chunks per thread.

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

namespace {

// Elements per chunk: the unit of parallel work and of the partial sums.
constexpr int64_t kChunk = 1 << 14;
// Elements per block: a block of x, grad and grad_x stays in L1 across the candidates.
constexpr int64_t kBlock = 512;

template <typename T>
struct Candidate {
  T scale;
  T low;
  T high;
  T factor;  // forward: probs[q] * s_q; backward: probs[q]
  bool live;  // factor != 0 before the cast, as the pure-torch path decides
};

template <typename T>
std::vector<Candidate<T>> candidates(
    int64_t count,
    const double* scales,
    const double* lows,
    const double* highs,
    const double* factors) {
  std::vector<Candidate<T>> out;
  out.reserve(static_cast<size_t>(count));
  for (int64_t q = 0; q < count; ++q) {
    // Python floats are cast to the dtype of x, as torch casts a scalar operand.
    out.push_back(
        {static_cast<T>(scales[q]),
         static_cast<T>(lows[q]),
         static_cast<T>(highs[q]),
         static_cast<T>(factors[q]),
         factors[q] != 0.0});
  }
  return out;
}

// max then min, each in the form of x86's maxps/minps (the second operand on ties and NaN), so
// that NaN and -0.0 pass through as in torch.clamp.
template <typename T>
inline T clamp_code(T value, T low, T high) {
  const T raised = low > value ? low : value;
  return high < raised ? high : raised;
}

template <typename T>
inline T multiply_add(T a, T b, T c) {
#if defined(__FMA__) || defined(__ARM_FEATURE_FMA)
  return std::fma(a, b, c);  // torch's vectorized add with alpha is vec::fmadd
#else
  return a * b + c;
#endif
}

// Calls body(chunk_begin, chunk_end) on contiguous ranges of [0, chunks), one per thread. The
// team always has `threads` threads (torch's count), so that GOMP never resizes its pool.
template <typename Body>
void parallel_chunks(int64_t chunks, int threads, const Body& body) {
  if (chunks <= 1 || threads <= 1 || omp_in_parallel()) {
    body(int64_t{0}, chunks);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const int64_t used = std::min<int64_t>(omp_get_num_threads(), chunks);
    const int64_t thread = omp_get_thread_num();
    const int64_t per_thread = (chunks + used - 1) / used;
    const int64_t begin = thread * per_thread;
    if (thread < used && begin < chunks) {
      body(begin, std::min(chunks, begin + per_thread));
    }
  }
}

template <typename T>
void forward_kernel(
    const T* x, T* y, int64_t n, const std::vector<Candidate<T>>& active, int threads) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  parallel_chunks(chunks, threads, [&](int64_t chunk_begin, int64_t chunk_end) {
    const int64_t end = std::min(n, chunk_end * kChunk);
    for (int64_t start = chunk_begin * kChunk; start < end; start += kBlock) {
      const int64_t size = std::min(kBlock, end - start);
      const T* source = x + start;
      T* target = y + start;
      for (size_t k = 0; k < active.size(); ++k) {
        const Candidate<T> c = active[k];
        if (k == 0) {
          for (int64_t i = 0; i < size; ++i) {
            target[i] = c.factor * clamp_code(std::nearbyint(source[i] / c.scale), c.low, c.high);
          }
        } else {
          for (int64_t i = 0; i < size; ++i) {
            const T term = c.factor * clamp_code(std::nearbyint(source[i] / c.scale), c.low, c.high);
            target[i] = target[i] + term;
          }
        }
      }
    }
  });
}

// One element of one candidate. kProbs: add g * code to codes_total; kClips: add g * d to
// d_total; kGradX: update grad_x (kFirst: this candidate writes it instead of adding to it).
template <typename T, bool kProbs, bool kClips, bool kGradX, bool kFirst>
inline void backward_element(
    T x, T g, T* grad_x, const Candidate<T>& c, double& codes_total, double& d_total) {
  const T u = x / c.scale;
  const bool inside = (u > c.low) & (u < c.high);
  if constexpr (kProbs || kClips) {
    const T code = std::nearbyint(clamp_code(u, c.low, c.high));
    if constexpr (kProbs) {
      codes_total += static_cast<double>(g) * static_cast<double>(code);
    }
    if constexpr (kClips) {
      // round(u) - u is exact (Sterbenz), so the clip gradient is not a difference of sums.
      const T d = code - (inside ? u : T(0));  // code - 0 is code outside
      d_total += static_cast<double>(g) * static_cast<double>(d);
    }
  }
  if constexpr (kGradX) {
    const T masked = inside ? g : T(0);
    if constexpr (kFirst) {
      *grad_x = masked * c.factor;  // times 1 is exact: no branch on theta == 1
    } else {
      *grad_x = multiply_add(masked, c.factor, *grad_x);
    }
  }
}

#if defined(__AVX2__) && defined(__FMA__)
// The float32 block with AVX2 intrinsics. grad_x and the codes take the values of
// backward_element (maxps/minps are clamp_code); the two sums are accumulated per vector lane in
// float32 over the block (at most kBlock / 8 products per lane, each fused into its lane's sum)
// and the lanes added in float64: the pure-torch path's sums are float32 dot products over far
// longer slices, and the block is fixed, so the sums still do not depend on the thread count.
template <bool kProbs, bool kClips, bool kGradX, bool kFirst>
void backward_block_avx2(
    const float* x,
    const float* g,
    float* grad_x,
    int64_t size,
    Candidate<float> c,
    double* sum_codes,
    double* sum_d) {
  const __m256 scale = _mm256_set1_ps(c.scale);
  const __m256 low = _mm256_set1_ps(c.low);
  const __m256 high = _mm256_set1_ps(c.high);
  const __m256 factor = _mm256_set1_ps(c.factor);
  __m256 codes_lanes = _mm256_setzero_ps();
  __m256 d_lanes = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= size; i += 8) {
    const __m256 gradient = _mm256_loadu_ps(g + i);
    const __m256 u = _mm256_div_ps(_mm256_loadu_ps(x + i), scale);
    const __m256 inside =
        _mm256_and_ps(_mm256_cmp_ps(u, low, _CMP_GT_OQ), _mm256_cmp_ps(u, high, _CMP_LT_OQ));
    if constexpr (kProbs || kClips) {
      const __m256 code = _mm256_round_ps(
          _mm256_min_ps(high, _mm256_max_ps(low, u)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      if constexpr (kProbs) {
        codes_lanes = _mm256_fmadd_ps(gradient, code, codes_lanes);
      }
      if constexpr (kClips) {
        const __m256 d = _mm256_sub_ps(code, _mm256_and_ps(u, inside));
        d_lanes = _mm256_fmadd_ps(gradient, d, d_lanes);
      }
    }
    if constexpr (kGradX) {
      const __m256 masked = _mm256_and_ps(gradient, inside);
      if constexpr (kFirst) {
        _mm256_storeu_ps(grad_x + i, _mm256_mul_ps(masked, factor));
      } else {
        _mm256_storeu_ps(grad_x + i, _mm256_fmadd_ps(masked, factor, _mm256_loadu_ps(grad_x + i)));
      }
    }
  }
  alignas(32) float lanes[2][8];
  _mm256_store_ps(lanes[0], codes_lanes);
  _mm256_store_ps(lanes[1], d_lanes);
  double codes_total = 0.0;
  double d_total = 0.0;
  for (int lane = 0; lane < 8; ++lane) {
    codes_total += static_cast<double>(lanes[0][lane]);
    d_total += static_cast<double>(lanes[1][lane]);
  }
  for (; i < size; ++i) {
    backward_element<float, kProbs, kClips, kGradX, kFirst>(
        x[i], g[i], grad_x + i, c, codes_total, d_total);
  }
  *sum_codes += codes_total;
  *sum_d += d_total;
}
#endif

// One candidate over one block (see backward_element for the flags).
template <typename T, bool kProbs, bool kClips, bool kGradX, bool kFirst>
void backward_block(
    const T* x,
    const T* g,
    T* grad_x,
    int64_t size,
    Candidate<T> c,
    double* sum_codes,
    double* sum_d) {
#if defined(__AVX2__) && defined(__FMA__)
  if constexpr (std::is_same_v<T, float>) {
    backward_block_avx2<kProbs, kClips, kGradX, kFirst>(x, g, grad_x, size, c, sum_codes, sum_d);
    return;
  }
#endif
  double codes_total = 0.0;
  double d_total = 0.0;
  // The simd reduction keeps the double sums per vector lane: a fixed order for a given build.
#pragma omp simd reduction(+ : codes_total, d_total)
  for (int64_t i = 0; i < size; ++i) {
    backward_element<T, kProbs, kClips, kGradX, kFirst>(
        x[i], g[i], kGradX ? grad_x + i : nullptr, c, codes_total, d_total);
  }
  *sum_codes += codes_total;
  *sum_d += d_total;
}

template <typename T>
using BlockFn = void (*)(const T*, const T*, T*, int64_t, Candidate<T>, double*, double*);

template <typename T, bool kProbs, bool kClips>
BlockFn<T> pick_grad_x(bool grad_x, bool first) {
  if (!grad_x) {
    return &backward_block<T, kProbs, kClips, false, false>;
  }
  return first ? &backward_block<T, kProbs, kClips, true, true>
               : &backward_block<T, kProbs, kClips, true, false>;
}

template <typename T>
BlockFn<T> pick_block(bool probs, bool clips, bool grad_x, bool first) {
  if (probs) {
    return clips ? pick_grad_x<T, true, true>(grad_x, first)
                 : pick_grad_x<T, true, false>(grad_x, first);
  }
  return clips ? pick_grad_x<T, false, true>(grad_x, first)
               : pick_grad_x<T, false, false>(grad_x, first);
}

template <typename T>
void backward_kernel(
    const T* x,
    const T* g,
    T* grad_x,
    int64_t n,
    const std::vector<Candidate<T>>& cands,
    bool need_clips,
    bool need_probs,
    double* sums,
    int threads) {
  const int64_t count = static_cast<int64_t>(cands.size());
  std::vector<BlockFn<T>> blocks(static_cast<size_t>(count), nullptr);
  bool any_grad_x = false;
  for (int64_t q = 0; q < count; ++q) {
    // Zero-probability candidates add nothing to grad_x or to the clip gradients.
    const bool live = cands[q].live;
    const bool writes_x = grad_x != nullptr && live;
    if (need_probs || (need_clips && live) || writes_x) {
      blocks[q] = pick_block<T>(need_probs, need_clips && live, writes_x, !any_grad_x);
    }
    any_grad_x = any_grad_x || writes_x;
  }
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(static_cast<size_t>(chunks * count * 2), 0.0);
  parallel_chunks(chunks, threads, [&](int64_t chunk_begin, int64_t chunk_end) {
    for (int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
      double* chunk_sums = partial.data() + chunk * count * 2;
      const int64_t end = std::min(n, (chunk + 1) * kChunk);
      for (int64_t start = chunk * kChunk; start < end; start += kBlock) {
        const int64_t size = std::min(kBlock, end - start);
        for (int64_t q = 0; q < count; ++q) {
          if (blocks[q] != nullptr) {
            double* pair = chunk_sums + 2 * q;
            T* grad_x_block = grad_x == nullptr ? nullptr : grad_x + start;
            blocks[q](x + start, g + start, grad_x_block, size, cands[q], pair, pair + 1);
          }
        }
        if (grad_x != nullptr && !any_grad_x) {  // every candidate has probability 0
          std::fill(grad_x + start, grad_x + start + size, T(0));
        }
      }
    }
  });
  std::fill(sums, sums + count * 2, 0.0);
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {  // in order, whatever the threads
    for (int64_t k = 0; k < count * 2; ++k) {
      sums[k] += partial[chunk * count * 2 + k];
    }
  }
}

template <typename T>
int forward_entry(
    const T* x,
    T* y,
    int64_t n,
    int64_t count,
    const double* scales,
    const double* lows,
    const double* highs,
    const double* weights,
    int threads) {
  try {
    forward_kernel<T>(x, y, n, candidates<T>(count, scales, lows, highs, weights), threads);
    return 0;
  } catch (...) {  // no C++ exception may cross the C ABI (only bad_alloc can occur)
    return 1;
  }
}

template <typename T>
int backward_entry(
    const T* x,
    const T* g,
    T* grad_x,
    int64_t n,
    int64_t count,
    const double* scales,
    const double* lows,
    const double* highs,
    const double* theta,
    int need_clips,
    int need_probs,
    double* sums,
    int threads) {
  try {
    const auto cands = candidates<T>(count, scales, lows, highs, theta);
    backward_kernel<T>(x, g, grad_x, n, cands, need_clips != 0, need_probs != 0, sums, threads);
    return 0;
  } catch (...) {
    return 1;
  }
}

template <typename T>
int weight_forward_entry(
    const T* w,
    const T* probs,
    T* mixed,
    int64_t channels,
    int64_t size,
    int64_t count,
    const int64_t* levels,
    const T* ranges) {
  for (int64_t c = 0; c < channels; ++c) {
    const T* row = w + c * size;
    T* out = mixed + c * size;
    std::fill(out, out + size, T(0));
    for (int64_t p = 0; p < count; ++p) {
      if (levels[p] == 0) {
        continue;  // Q_0 = 0 adds nothing, not even +0.0
      }
      const T level = static_cast<T>(levels[p]);
      const T scale = ranges[p * channels + c] / level;
      const T factor = probs[p * channels + c] * scale;
      for (int64_t k = 0; k < size; ++k) {
        const T code = clamp_code(std::nearbyint(row[k] / scale), -level, level);
        out[k] = out[k] + code * factor;
      }
    }
  }
  return 0;
}

template <typename T>
int weight_backward_entry(
    const T* w,
    const T* g,
    T* grad_probs,
    int64_t channels,
    int64_t size,
    int64_t count,
    const int64_t* levels,
    const T* ranges) {
  for (int64_t c = 0; c < channels; ++c) {
    const T* row = w + c * size;
    const T* grad = g + c * size;
    for (int64_t p = 0; p < count; ++p) {
      T value = T(0);
      if (levels[p] != 0) {
        const T level = static_cast<T>(levels[p]);
        const T scale = ranges[p * channels + c] / level;
        double total = 0.0;
#pragma omp simd reduction(+ : total)
        for (int64_t k = 0; k < size; ++k) {
          const T code = clamp_code(std::nearbyint(row[k] / scale), -level, level);
          total += static_cast<double>(grad[k]) * static_cast<double>(code);
        }
        value = static_cast<T>(total) * scale;
      }
      grad_probs[p * channels + c] = value;
    }
  }
  return 0;
}

}  // namespace

// Forward: y = sum over the `count` active candidates of weights[k] * codes_k (x, y: n
// contiguous elements). Backward: grad_x (n elements, or null when not needed) and sums, double
// (count, 2): per candidate sum g * codes and sum g * d. `threads`: torch.get_num_threads().
// Each returns 0, or 1 if out of memory.
extern "C" {

int zerobit_act_forward_f32(
    const float* x, float* y, int64_t n, int64_t count, const double* scales,
    const double* lows, const double* highs, const double* weights, int threads) {
  return forward_entry<float>(x, y, n, count, scales, lows, highs, weights, threads);
}

int zerobit_act_forward_f64(
    const double* x, double* y, int64_t n, int64_t count, const double* scales,
    const double* lows, const double* highs, const double* weights, int threads) {
  return forward_entry<double>(x, y, n, count, scales, lows, highs, weights, threads);
}

int zerobit_act_backward_f32(
    const float* x, const float* g, float* grad_x, int64_t n, int64_t count,
    const double* scales, const double* lows, const double* highs, const double* theta,
    int need_clips, int need_probs, double* sums, int threads) {
  return backward_entry<float>(
      x, g, grad_x, n, count, scales, lows, highs, theta, need_clips, need_probs, sums, threads);
}

int zerobit_act_backward_f64(
    const double* x, const double* g, double* grad_x, int64_t n, int64_t count,
    const double* scales, const double* lows, const double* highs, const double* theta,
    int need_clips, int need_probs, double* sums, int threads) {
  return backward_entry<double>(
      x, g, grad_x, n, count, scales, lows, highs, theta, need_clips, need_probs, sums, threads);
}

// Weights: w and g are (channels, size) contiguous; probs, grad_probs and ranges (count,
// channels); levels[p] = n_p, 0 for the pruned candidate; candidate p's scale in channel c is
// ranges[p * channels + c] / n_p (the range rule, min-max or MSE, is chosen by the caller). Each
// returns 0.
int zerobit_weight_forward_f32(
    const float* w, const float* probs, float* mixed, int64_t channels, int64_t size,
    int64_t count, const int64_t* levels, const float* ranges) {
  return weight_forward_entry<float>(w, probs, mixed, channels, size, count, levels, ranges);
}

int zerobit_weight_forward_f64(
    const double* w, const double* probs, double* mixed, int64_t channels, int64_t size,
    int64_t count, const int64_t* levels, const double* ranges) {
  return weight_forward_entry<double>(w, probs, mixed, channels, size, count, levels, ranges);
}

int zerobit_weight_backward_f32(
    const float* w, const float* g, float* grad_probs, int64_t channels, int64_t size,
    int64_t count, const int64_t* levels, const float* ranges) {
  return weight_backward_entry<float>(w, g, grad_probs, channels, size, count, levels, ranges);
}

int zerobit_weight_backward_f64(
    const double* w, const double* g, double* grad_probs, int64_t channels, int64_t size,
    int64_t count, const int64_t* levels, const double* ranges) {
  return weight_backward_entry<double>(w, g, grad_probs, channels, size, count, levels, ranges);
}

}  // extern "C"
