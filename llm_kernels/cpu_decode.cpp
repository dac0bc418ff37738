// A pure decode step's decoder layers on the CPU in one call: the same arithmetic as engines/llm/models/decoder.py
// (float32 activations, float32 paged KV), without a Python frame, a module call or a dispatcher trip per small op.
// The projections stay ATen's (dense, torch's packed int4 and int8 CPU kernels); the norms, rotary, KV store,
// paged attention and SwiGLU are loops here. llm_kernels/cpu_decode.py builds and calls it.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <cmath>
#include <vector>

using at::Tensor;

namespace {

enum Kind : int64_t { DENSE = 0, INT4 = 1, INT8 = 2 };
constexpr int64_t TENSORS_PER_LAYER = 16;  // 4 norms, then (weight, scales, bias) for qkv, o, gate_up, down

Tensor project(const Tensor& x, const Tensor* p, int64_t kind, int64_t group) {
    const Tensor &weight = p[0], &scales = p[1], &bias = p[2];
    Tensor out;
    if (kind == DENSE) {
        out = at::linear(x, weight);
    } else if (kind == INT4) {
        out = at::_weight_int4pack_mm_for_cpu(x.to(at::kBFloat16), weight, group, scales).to(at::kFloat);
    } else {
        out = at::_weight_int8pack_mm(x.to(at::kBFloat16), weight, scales).to(at::kFloat);
    }
    if (bias.numel()) out.add_(bias.to(at::kFloat));
    return out;
}

// x * rsqrt(mean(x²) + eps), then times the weight: RMSNorm's order in layers.py.
void rms_norm(const float* x, const float* weight, float* out, int64_t n, double eps) {
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) sum += double(x[i]) * x[i];
    const float inv = 1.0f / std::sqrt(float(sum / n) + float(eps));
    for (int64_t i = 0; i < n; ++i) out[i] = weight[i] * (x[i] * inv);
}

Tensor rms_norm_rows(const Tensor& x, const Tensor& weight, double eps) {
    Tensor out = at::empty_like(x);
    const int64_t n = x.size(1);
    const float *src = x.data_ptr<float>(), *w = weight.data_ptr<float>();
    float* dst = out.data_ptr<float>();
    at::parallel_for(0, x.size(0), 1, [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) rms_norm(src + r * n, w, dst + r * n, n, eps);
    });
    return out;
}

}  // namespace

// Runs every layer on x ([seqs, hidden], one new token each), writing each layer's K/V into the pool and
// returning the hidden states before the final norm. cos/sin are [seqs, head_dim] (sin carries rotate_half's sign).
Tensor decode_layers(Tensor x, const Tensor& cos, const Tensor& sin, const std::vector<Tensor>& weights,
                     const std::vector<int64_t>& kinds, const std::vector<int64_t>& groups, const Tensor& kv,
                     const Tensor& block_tables, const Tensor& seq_lens, const Tensor& slots, int64_t heads,
                     int64_t kv_heads, int64_t head_dim, double eps, double scale) {
    TORCH_CHECK(x.dtype() == at::kFloat && kv.dtype() == at::kFloat, "cpu_decode runs float32 activations and KV");
    TORCH_CHECK(block_tables.dtype() == at::kInt && seq_lens.dtype() == at::kInt && slots.dtype() == at::kLong,
                "block tables and seq lens are int32, slots int64");
    const int64_t layers = kv.size(1), block_size = kv.size(3), seqs = x.size(0), d = head_dim;
    TORCH_CHECK(int64_t(weights.size()) == layers * TENSORS_PER_LAYER, "weights: 16 tensors a layer");
    const int64_t q_size = heads * d, kv_size = kv_heads * d, per_kv = heads / kv_heads, half = d / 2;
    const int64_t layer_stride = kv.stride(1), cache_half = kv.stride(0), token_stride = kv.stride(3);
    const int32_t* tables = block_tables.data_ptr<int32_t>();
    const int32_t* lens = seq_lens.data_ptr<int32_t>();
    const int64_t* slot = slots.data_ptr<int64_t>();
    const int64_t width = block_tables.size(1);
    const float *cos_p = cos.data_ptr<float>(), *sin_p = sin.data_ptr<float>();
    x = x.contiguous().clone();
    for (int64_t layer = 0; layer < layers; ++layer) {
        const Tensor* w = weights.data() + layer * TENSORS_PER_LAYER;
        const int64_t* kind = kinds.data() + layer * 4;
        const int64_t* group = groups.data() + layer * 4;
        Tensor qkv = project(rms_norm_rows(x, w[0], eps), w + 4, kind[0], group[0]).contiguous();
        float* qkv_p = qkv.data_ptr<float>();
        const int64_t row = qkv.size(1);
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
        Tensor attended = at::empty({seqs, q_size}, x.options());
        float* o_p = attended.data_ptr<float>();
        at::parallel_for(0, seqs * heads, 1, [&](int64_t begin, int64_t end) {
            std::vector<float> scores;
            for (int64_t i = begin; i < end; ++i) {
                const int64_t s = i / heads, h = i % heads, g = h / per_kv, length = lens[s];
                const float* q = qkv_p + s * row + h * d;
                float* o = o_p + s * q_size + h * d;
                scores.resize(length);
                float top = -INFINITY;
                for (int64_t t = 0; t < length; ++t) {
                    const int64_t at_ = int64_t(tables[s * width + t / block_size]) * block_size + t % block_size;
                    const float* k = k_cache + at_ * token_stride + g * d;
                    float dot = 0;
                    for (int64_t j = 0; j < d; ++j) dot += q[j] * k[j];
                    scores[t] = dot * float(scale);
                    top = std::max(top, scores[t]);
                }
                float total = 0;
                for (int64_t t = 0; t < length; ++t) total += scores[t] = std::exp(scores[t] - top);
                std::fill(o, o + d, 0.0f);
                for (int64_t t = 0; t < length; ++t) {
                    const int64_t at_ = int64_t(tables[s * width + t / block_size]) * block_size + t % block_size;
                    const float* v = v_cache + at_ * token_stride + g * d;
                    const float p = scores[t] / total;
                    for (int64_t j = 0; j < d; ++j) o[j] += p * v[j];
                }
            }
        });
        x.add_(project(attended, w + 7, kind[1], group[1]));
        Tensor gate_up = project(rms_norm_rows(x, w[1], eps), w + 10, kind[2], group[2]).contiguous();
        const int64_t inter = gate_up.size(1) / 2;
        Tensor act = at::empty({seqs, inter}, x.options());
        const float* gu = gate_up.data_ptr<float>();
        float* a = act.data_ptr<float>();
        at::parallel_for(0, seqs * inter, 4096, [&](int64_t begin, int64_t end) {
            for (int64_t i = begin; i < end; ++i) {
                const int64_t s = i / inter, j = i % inter;
                const float gate = gu[s * 2 * inter + j];
                a[i] = gate / (1.0f + std::exp(-gate)) * gu[s * 2 * inter + inter + j];
            }
        });
        x.add_(project(act, w + 13, kind[3], group[3]));
    }
    return x;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("decode_layers", &decode_layers, "every decoder layer of a pure decode step, float32 on the CPU");
}
