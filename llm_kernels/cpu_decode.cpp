// A pure decode step's decoder layers on the CPU in one call: the same arithmetic as engines/llm/models/decoder.py
// (float32 activations, float32 paged KV), without a Python frame, a module call or a dispatcher trip per small op.
// The projections stay ATen's (dense, torch's packed int4 and int8 CPU kernels); the norms, rotary, KV store,
// paged attention and SwiGLU are loops here. llm_kernels/cpu_decode.py builds and calls it.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include "ggml_matmul.h"

#include <cmath>
#include <type_traits>
#include <vector>

using at::Tensor;

namespace {

enum Kind : int64_t { DENSE = 0, INT4 = 1, INT8 = 2, GGML = 3 };
constexpr int64_t TENSORS_PER_LAYER = 16;  // 4 norms, then (weight, scales, bias) for qkv, o, gate_up, down

// A projection's input: float32 for a dense or GGML weight, bfloat16 for torch's packed kernels (they take only
// that). The loops
// that make an input write it in that dtype, the rounding the Python path's cast gives, with no cast op between.
Tensor input_for(int64_t kind, int64_t rows, int64_t cols) {
    const bool f32 = kind == DENSE || kind == GGML;
    return at::empty({rows, cols}, at::TensorOptions().dtype(f32 ? at::kFloat : at::kBFloat16));
}

template <typename Body>
void writing(Tensor& input, Body&& body) {
    if (input.scalar_type() == at::kFloat) {
        body(input.data_ptr<float>());
    } else {
        body(input.data_ptr<at::BFloat16>());
    }
}

// A projection's result read as float32 with its bias added: the Python path's `out.to(float32) + bias`.
struct Result {
    Tensor out;
    const float* dense;
    const at::BFloat16* packed;
    const float* bias;
    int64_t cols;

    float operator()(int64_t row, int64_t col) const {
        const float v = dense ? dense[row * cols + col] : float(packed[row * cols + col]);
        return bias ? v + bias[col] : v;
    }
};

// How the packed kinds multiply: torch's int4 group size; from how many rows GGML blocks are widened.
struct Packing {
    int64_t group, ggml_widen_from;
};

Result project(const Tensor& x, const Tensor* p, int64_t kind, const Packing& packing) {
    const Tensor &weight = p[0], &scales = p[1], &bias = p[2];
    Tensor out = kind == DENSE  ? at::linear(x, weight)
                 : kind == GGML ? ggml_matmul(x, weight, scales, packing.ggml_widen_from)  // blocks, segments
                 : kind == INT4 ? at::_weight_int4pack_mm_for_cpu(x, weight, packing.group, scales)
                                : at::_weight_int8pack_mm(x, weight, scales);
    out = out.contiguous();
    const bool f32 = out.scalar_type() == at::kFloat;
    return {out, f32 ? out.data_ptr<float>() : nullptr, f32 ? nullptr : out.data_ptr<at::BFloat16>(),
            bias.numel() ? bias.data_ptr<float>() : nullptr, out.size(1)};
}

// x * rsqrt(mean(x²) + eps), then times the weight: RMSNorm's order in layers.py.
template <typename T>
void rms_norm(const float* x, const float* weight, T* out, int64_t n, double eps) {
    double sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < n; ++i) sum += double(x[i]) * x[i];
    const float inv = 1.0f / std::sqrt(float(sum / n) + float(eps));
    for (int64_t i = 0; i < n; ++i) out[i] = T(weight[i] * (x[i] * inv));
}

// Each row of x normalized into a new input for a projection of this kind.
Tensor rms_norm_rows(const Tensor& x, const Tensor& weight, double eps, int64_t kind) {
    Tensor out = input_for(kind, x.size(0), x.size(1));
    const int64_t n = x.size(1);
    const float *src = x.data_ptr<float>(), *w = weight.data_ptr<float>();
    writing(out, [&](auto* dst) {
        at::parallel_for(0, x.size(0), 1, [&](int64_t begin, int64_t end) {
            for (int64_t r = begin; r < end; ++r) rms_norm(src + r * n, w, dst + r * n, n, eps);
        });
    });
    return out;
}

// x += a projection's result (the residual connection).
void add_into(Tensor& x, const Result& r) {
    float* dst = x.data_ptr<float>();
    for (int64_t i = 0; i < x.size(0); ++i)
        for (int64_t j = 0; j < r.cols; ++j) dst[i * r.cols + j] += r(i, j);
}

// One query head over its sequence's context in the paged pool (k and v point at its KV head in token 0 of block 0):
// softmax(q·k · scale) · v, in float32, written to o.
void attend(const float* q, const float* k, const float* v, const int32_t* table, int64_t length, int64_t block_size,
            int64_t token_stride, int64_t d, float scale, std::vector<float>& scores, float* o) {
    scores.resize(length);
    float top = -INFINITY;
    for (int64_t t = 0; t < length; ++t) {
        const float* key = k + (int64_t(table[t / block_size]) * block_size + t % block_size) * token_stride;
        float dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int64_t j = 0; j < d; ++j) dot += q[j] * key[j];
        scores[t] = dot * scale;
        top = std::max(top, scores[t]);
    }
    float total = 0;
    for (int64_t t = 0; t < length; ++t) total += scores[t] = std::exp(scores[t] - top);
    std::fill(o, o + d, 0.0f);
    for (int64_t t = 0; t < length; ++t) {
        const float* value = v + (int64_t(table[t / block_size]) * block_size + t % block_size) * token_stride;
        const float p = scores[t] / total;
        for (int64_t j = 0; j < d; ++j) o[j] += p * value[j];
    }
}

}  // namespace

// Runs every layer on x ([seqs, hidden], one new token each), writing each layer's K/V into the pool and
// returning the hidden states before the final norm. cos/sin are [seqs, head_dim] (sin carries rotate_half's sign).
Tensor decode_layers(Tensor x, const Tensor& cos, const Tensor& sin, const std::vector<Tensor>& weights,
                     const std::vector<int64_t>& kinds, int64_t group, int64_t ggml_widen_from, const Tensor& kv,
                     const Tensor& block_tables, const Tensor& seq_lens, const Tensor& slots, int64_t heads,
                     int64_t kv_heads, int64_t head_dim, double eps, double scale) {
    TORCH_CHECK(x.dtype() == at::kFloat && kv.dtype() == at::kFloat, "cpu_decode runs float32 activations and KV");
    TORCH_CHECK(block_tables.dtype() == at::kInt && seq_lens.dtype() == at::kInt && slots.dtype() == at::kLong,
                "block tables and seq lens are int32, slots int64");
    const int64_t layers = kv.size(1), block_size = kv.size(3), seqs = x.size(0), d = head_dim;
    TORCH_CHECK(int64_t(weights.size()) == layers * TENSORS_PER_LAYER && int64_t(kinds.size()) == layers * 4,
                "weights: 16 tensors a layer; kinds: 4 a layer");
    TORCH_CHECK(kv.is_contiguous() && cos.is_contiguous() && sin.is_contiguous() && block_tables.is_contiguous() &&
                    seq_lens.is_contiguous() && slots.is_contiguous(),
                "the pool, rotary tables and step metadata must be contiguous");
    TORCH_CHECK(heads % kv_heads == 0 && head_dim % 2 == 0, "heads must be a multiple of kv heads, head_dim even");
    const int64_t q_size = heads * d, kv_size = kv_heads * d, per_kv = heads / kv_heads, half = d / 2;
    const int64_t layer_stride = kv.stride(1), cache_half = kv.stride(0), token_stride = kv.stride(3);
    const int32_t* tables = block_tables.data_ptr<int32_t>();
    const int32_t* lens = seq_lens.data_ptr<int32_t>();
    const int64_t* slot = slots.data_ptr<int64_t>();
    const int64_t width = block_tables.size(1);
    const float *cos_p = cos.data_ptr<float>(), *sin_p = sin.data_ptr<float>();
    const Packing packing{group, ggml_widen_from};
    x = x.contiguous().clone();
    for (int64_t layer = 0; layer < layers; ++layer) {
        const Tensor* w = weights.data() + layer * TENSORS_PER_LAYER;
        const int64_t* kind = kinds.data() + layer * 4;
        const Result qkv_out = project(rms_norm_rows(x, w[0], eps, kind[0]), w + 4, kind[0], packing);
        const int64_t row = qkv_out.cols;
        Tensor qkv = at::empty({seqs, row}, x.options());
        float* qkv_p = qkv.data_ptr<float>();
        for (int64_t s = 0; s < seqs; ++s)
            for (int64_t j = 0; j < row; ++j) qkv_p[s * row + j] = qkv_out(s, j);
        const bool qk_norm = w[2].numel() > 0;
        // q/k norms and rotary, one head of one sequence at a time
        at::parallel_for(0, seqs * (heads + kv_heads), 1, [&](int64_t begin, int64_t end) {
            std::vector<float> tmp(d);
            for (int64_t i = begin; i < end; ++i) {
                const int64_t s = i / (heads + kv_heads), h = i % (heads + kv_heads);
                float* v = qkv_p + s * row + h * d;
                if (qk_norm) rms_norm(v, (h < heads ? w[2] : w[3]).data_ptr<float>(), v, d, eps);
                const float *c = cos_p + s * d, *sn = sin_p + s * d;
                for (int64_t j = 0; j < d; ++j) tmp[j] = v[j] * c[j] + v[(j + half) % d] * sn[j];
                std::copy(tmp.begin(), tmp.end(), v);
            }
        });
        float* k_cache = kv.data_ptr<float>() + layer * layer_stride;
        float* v_cache = k_cache + cache_half;
        for (int64_t s = 0; s < seqs; ++s) {  // the new token's K/V into its slot (-1: a padding row, not written)
            if (slot[s] < 0) continue;
            const float* k_new = qkv_p + s * row + q_size;
            std::copy(k_new, k_new + kv_size, k_cache + slot[s] * token_stride);
            std::copy(k_new + kv_size, k_new + 2 * kv_size, v_cache + slot[s] * token_stride);
        }
        Tensor attended = input_for(kind[1], seqs, q_size);
        writing(attended, [&](auto* o_p) {
            at::parallel_for(0, seqs * heads, 1, [&](int64_t begin, int64_t end) {
                std::vector<float> scores, o(d);
                for (int64_t i = begin; i < end; ++i) {
                    const int64_t s = i / heads, h = i % heads;
                    attend(qkv_p + s * row + h * d, k_cache + h / per_kv * d, v_cache + h / per_kv * d,
                           tables + s * width, lens[s], block_size, token_stride, d, float(scale), scores, o.data());
                    std::copy(o.begin(), o.end(), o_p + s * q_size + h * d);
                }
            });
        });
        add_into(x, project(attended, w + 7, kind[1], packing));
        const Result gate_up = project(rms_norm_rows(x, w[1], eps, kind[2]), w + 10, kind[2], packing);
        const int64_t inter = gate_up.cols / 2;
        Tensor act = input_for(kind[3], seqs, inter);
        writing(act, [&](auto* a) {
            using T = std::remove_pointer_t<decltype(a)>;
            at::parallel_for(0, seqs * inter, 4096, [&](int64_t begin, int64_t end) {
                for (int64_t i = begin; i < end; ++i) {
                    const int64_t s = i / inter, j = i % inter;
                    const float gate = gate_up(s, j);
                    a[i] = T(gate / (1.0f + std::exp(-gate)) * gate_up(s, inter + j));
                }
            });
        });
        add_into(x, project(act, w + 13, kind[3], packing));
    }
    return x;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.attr("DENSE") = int64_t(DENSE);
    m.attr("INT4") = int64_t(INT4);
    m.attr("INT8") = int64_t(INT8);
    m.attr("GGML") = int64_t(GGML);
    m.attr("GGML_DIRECT") = GGML_DIRECT;
    // Without the GIL: the server's threads in this process go on while a step runs (as they do between ATen ops).
    m.def("decode_layers", &decode_layers, "every decoder layer of a pure decode step, float32 on the CPU",
          py::call_guard<py::gil_scoped_release>());
    m.def("ggml_matmul", &ggml_matmul, "x @ W.T for W kept in GGUF's blocks", py::call_guard<py::gil_scoped_release>());
    m.def("ggml_dequantize", &ggml_dequantize, "GGUF blocks' rows as float32",
          py::call_guard<py::gil_scoped_release>());
}
