// GGUF weights on the CPU in llama.cpp's own blocks (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K): nothing is
// repacked, so the engine holds the file's bytes. A step of few rows (decode) multiplies the blocks directly: each
// group of 32 codes becomes exact bfloat16 integers and each float32 activation is split into two bfloat16 halves
// (hi + lo, 16 significant bits), so AVX512-BF16 dot products give the dequantized float32 matmul to about 1e-6,
// relative. A step of many rows (a prompt's prefill: from budget/gguf.py's DEQUANTIZE_FROM_ROWS["ggml"], which the
// caller passes) widens WIDEN_ROWS weight rows at a time to float32 and calls ATen's matmul; so does every step on a
// CPU without AVX512-BF16 (the loader repacks a GGUF there instead, so only a direct call lands here). The block
// layouts are ggml's (ggml-quants.c); the gguf package's dequantize is the tests' oracle.
#include "ggml_matmul.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <vector>

#if defined(__F16C__) || defined(__AVX512BF16__)
#include <immintrin.h>
#endif
#if defined(__AVX512BF16__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define BF16_DOT 1
#endif

using at::Tensor;

namespace {

enum Type : int64_t { Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q4_K = 12, Q5_K = 13, Q6_K = 14 };
constexpr int64_t WIDEN_ROWS = 4096;     // budget/gguf.py DEQUANT_ROWS: the plan counts this slice as scratch
constexpr int TILE = 8;                  // activation rows a weight block is unpacked once for

float half(const uint8_t* p) {
    uint16_t h;
    std::memcpy(&h, p, 2);
#ifdef __F16C__
    return _cvtsh_ss(h);
#else
    return c10::detail::fp16_ieee_to_fp32_value(h);
#endif
}

// Q4_K/Q5_K: sub-block j's 6-bit scale and min, packed in 12 bytes (ggml's get_scale_min_k4).
void scale_min_k4(int j, const uint8_t* q, float& scale, float& min) {
    if (j < 4) {
        scale = q[j] & 63, min = q[j + 4] & 63;
    } else {
        scale = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), min = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

#ifdef BF16_DOT
// bfloat16 bits of the small integers i - offset, for i in 0..N-1: codes become exact weights with one permute.
template <int N>
struct Table {
    alignas(64) uint16_t bits[N];
    explicit Table(int offset) {
        for (int i = 0; i < N; ++i) {
            const float f = float(i - offset);
            uint32_t u;
            std::memcpy(&u, &f, 4);
            bits[i] = uint16_t(u >> 16);
        }
    }
    __m512i lo() const { return _mm512_load_si512(bits); }
    __m512i hi() const { return _mm512_load_si512(bits + 32); }
};
const Table<32> CODES(0), MINUS_8(8), MINUS_16(16);
const Table<64> MINUS_32(32);

__m512bh lookup(__m512i codes, const Table<32>& t) { return (__m512bh)_mm512_permutexvar_epi16(codes, t.lo()); }

// 32 bytes as 32 16-bit lanes
__m512i widen(__m256i bytes) { return _mm512_cvtepu8_epi16(bytes); }

// 16 bytes of two codes each: the low nibbles (elements 0..15), then the high ones (16..31)
__m512i nibbles(const uint8_t* qs) {
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs)), f = _mm_set1_epi8(15);
    return widen(_mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), f), _mm_and_si128(q, f)));
}

__m512i plus16(__m512i codes, __mmask32 where) {
    return _mm512_mask_add_epi16(codes, where, codes, _mm512_set1_epi16(16));
}

__m256i load32(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }

// One block as its groups of 32 weights: w[g] the codes as exact bfloat16, s[g] the scale of each pair of
// elements (16 lanes), mn[g] a constant added to every weight of the group.
template <int G>
struct Groups {
    __m512bh w[G];
    __m512 s[G];
    float mn[G];
};
#endif

// Q4_0/Q4_1 and Q5_0/Q5_1: 32 weights, w = (q - offset)·d or q·d + m (the "_1" types carry the constant m), q's
// low 4 bits two a byte (element j in the low nibble, j + 16 in the high one), Q5's fifth bits in a word (bit j for
// element j).
template <int BITS, bool MIN_>
struct BlockQ {
    static constexpr int64_t QK = 32, BYTES = 2 + (MIN_ ? 2 : 0) + (BITS == 5 ? 4 : 0) + 16;
    static constexpr bool MIN = MIN_;
    static constexpr int OFFSET = MIN ? 0 : 1 << (BITS - 1), QH = MIN ? 4 : 2, QS = BYTES - 16;

    static uint32_t fifth_bits(const uint8_t* b) {
        uint32_t qh = 0;
        if constexpr (BITS == 5) std::memcpy(&qh, b + QH, 4);
        return qh;
    }
    static void dequantize(const uint8_t* b, float* y) {
        const float d = half(b), m = MIN ? half(b + 2) : 0.0f;
        const uint32_t qh = fifth_bits(b);
        for (int j = 0; j < 16; ++j) {
            const int lo = (b[QS + j] & 15) | (((qh >> j) & 1) << 4);
            const int hi = (b[QS + j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
            y[j] = MIN ? float(lo) * d + m : float(lo - OFFSET) * d;
            y[j + 16] = MIN ? float(hi) * d + m : float(hi - OFFSET) * d;
        }
    }
#ifdef BF16_DOT
    static void groups(const uint8_t* b, Groups<1>& g) {
        const Table<32>& table = OFFSET == 0 ? CODES : OFFSET == 8 ? MINUS_8 : MINUS_16;
        __m512i codes = nibbles(b + QS);
        if constexpr (BITS == 5) codes = plus16(codes, fifth_bits(b));
        g.w[0] = lookup(codes, table), g.s[0] = _mm512_set1_ps(half(b));
        if constexpr (MIN) g.mn[0] = half(b + 2);
    }
#endif
};
using BlockQ4_0 = BlockQ<4, false>;
using BlockQ4_1 = BlockQ<4, true>;
using BlockQ5_0 = BlockQ<5, false>;
using BlockQ5_1 = BlockQ<5, true>;

struct BlockQ8_0 {
    static constexpr int64_t QK = 32, BYTES = 34;
    static constexpr bool MIN = false;
    static void dequantize(const uint8_t* b, float* y) {
        const float d = half(b);
        for (int j = 0; j < 32; ++j) y[j] = float(int8_t(b[2 + j])) * d;
    }
#ifdef BF16_DOT
    static void groups(const uint8_t* b, Groups<QK / 32>& g) {
        const auto codes = [&](int at) {
            return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + at))));
        };
        g.w[0] = _mm512_cvtne2ps_pbh(codes(18), codes(2)), g.s[0] = _mm512_set1_ps(half(b));
    }
#endif
};

// Q4_K and Q5_K: 256 weights as 8 sub-blocks of 32, each w = d·scale·q - dmin·min; the codes of sub-blocks 2c and
// 2c+1 share 32 bytes (low and high nibbles), Q5_K's fifth bits sit in 32 more bytes (bits 2c and 2c+1 of byte l).
template <bool FIFTH>
struct BlockK {
    static constexpr int64_t QK = 256, BYTES = FIFTH ? 176 : 144;
    static constexpr bool MIN = true;
    static constexpr int QS = FIFTH ? 48 : 16;
    static void dequantize(const uint8_t* b, float* y) {
        const float d = half(b), dmin = half(b + 2);
        for (int c = 0; c < 4; ++c) {
            float s1, m1, s2, m2;
            scale_min_k4(2 * c, b + 4, s1, m1), scale_min_k4(2 * c + 1, b + 4, s2, m2);
            const float d1 = d * s1, n1 = dmin * m1, d2 = d * s2, n2 = dmin * m2;
            const uint8_t *q = b + QS + 32 * c, *qh = b + 16;
            for (int l = 0; l < 32; ++l) {
                const int hi1 = FIFTH && (qh[l] >> (2 * c)) & 1 ? 16 : 0;
                const int hi2 = FIFTH && (qh[l] >> (2 * c + 1)) & 1 ? 16 : 0;
                y[64 * c + l] = d1 * float((q[l] & 15) + hi1) - n1;
                y[64 * c + l + 32] = d2 * float((q[l] >> 4) + hi2) - n2;
            }
        }
    }
#ifdef BF16_DOT
    static void groups(const uint8_t* b, Groups<QK / 32>& g) {
        const float d = half(b), dmin = half(b + 2);
        const __m256i f = _mm256_set1_epi8(15), qh = FIFTH ? load32(b + 16) : _mm256_setzero_si256();
        for (int c = 0; c < 4; ++c) {
            const __m256i q = load32(b + QS + 32 * c);
            __m512i lo = widen(_mm256_and_si256(q, f)), hi = widen(_mm256_and_si256(_mm256_srli_epi16(q, 4), f));
            if (FIFTH) {
                lo = plus16(lo, _mm256_test_epi8_mask(qh, _mm256_set1_epi8(char(1 << (2 * c)))));
                hi = plus16(hi, _mm256_test_epi8_mask(qh, _mm256_set1_epi8(char(2 << (2 * c)))));
            }
            for (int h = 0; h < 2; ++h) {
                float scale, min;
                scale_min_k4(2 * c + h, b + 4, scale, min);
                g.w[2 * c + h] = lookup(h ? hi : lo, CODES);
                g.s[2 * c + h] = _mm512_set1_ps(d * scale), g.mn[2 * c + h] = -dmin * min;
            }
        }
    }
#endif
};

// Q6_K: 256 weights as 16 sub-blocks of 16, w = d·scale·(q - 32), q's low 4 bits in ql and high 2 in qh.
struct BlockQ6_K {
    static constexpr int64_t QK = 256, BYTES = 210;
    static constexpr bool MIN = false;
    static void dequantize(const uint8_t* b, float* y) {
        const float d = half(b + 208);
        for (int n = 0; n < 2; ++n) {
            const uint8_t *ql = b + 64 * n, *qh = b + 128 + 32 * n;
            const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192) + 8 * n;
            for (int l = 0; l < 32; ++l) {
                const int is = l / 16;
                const int q1 = int((ql[l] & 15) | ((qh[l] & 3) << 4)) - 32;
                const int q2 = int((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = int((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = int((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                float* o = y + 128 * n;
                o[l] = d * sc[is] * q1, o[l + 32] = d * sc[is + 2] * q2;
                o[l + 64] = d * sc[is + 4] * q3, o[l + 96] = d * sc[is + 6] * q4;
            }
        }
    }
#ifdef BF16_DOT
    static void groups(const uint8_t* b, Groups<QK / 32>& g) {
        const float d = half(b + 208);
        const __m256i f = _mm256_set1_epi8(15), top = _mm256_set1_epi8(0x30);
        for (int n = 0; n < 2; ++n) {
            const __m256i a = load32(b + 64 * n), c = load32(b + 64 * n + 32), h = load32(b + 128 + 32 * n);
            const __m256i q[4] = {
                _mm256_or_si256(_mm256_and_si256(a, f), _mm256_and_si256(_mm256_slli_epi16(h, 4), top)),
                _mm256_or_si256(_mm256_and_si256(c, f), _mm256_and_si256(_mm256_slli_epi16(h, 2), top)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(a, 4), f), _mm256_and_si256(h, top)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(c, 4), f),
                                _mm256_and_si256(_mm256_srli_epi16(h, 2), top))};
            const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192) + 8 * n;
            for (int i = 0; i < 4; ++i) {  // elements 0..15 of the group (lanes 0..7) and 16..31 have a scale each
                g.w[4 * n + i] = (__m512bh)_mm512_permutex2var_epi16(MINUS_32.lo(), widen(q[i]), MINUS_32.hi());
                g.s[4 * n + i] = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(d * sc[2 * i]),
                                                      _mm512_set1_ps(d * sc[2 * i + 1]));
            }
        }
    }
#endif
};

template <typename Body>
void by_type(int64_t type, Body&& body) {
    switch (type) {
        case Q4_0: return body(BlockQ4_0{});
        case Q4_1: return body(BlockQ4_1{});
        case Q5_0: return body(BlockQ5_0{});
        case Q5_1: return body(BlockQ5_1{});
        case Q8_0: return body(BlockQ8_0{});
        case Q4_K: return body(BlockK<false>{});
        case Q5_K: return body(BlockK<true>{});
        case Q6_K: return body(BlockQ6_K{});
        default: TORCH_CHECK(false, "GGML type ", type, " is not multiplied as stored");
    }
}

int64_t row_bytes(int64_t type, int64_t cols) {
    int64_t bytes = 0;
    by_type(type, [&](auto block) {
        using B = decltype(block);
        TORCH_CHECK(cols % B::QK == 0, "a row of ", cols, " weights is not whole blocks of ", B::QK);
        bytes = cols / B::QK * B::BYTES;
    });
    return bytes;
}

#ifdef BF16_DOT
// One block widened through the direct path's groups: the same products as dequantize (code · scale, then the
// constant), sixteen at a time. The scale of elements 0..15 of a group is lane 0's, of 16..31 lane 8's.
template <typename B>
void widen(const uint8_t* b, float* y) {
    Groups<B::QK / 32> g;
    B::groups(b, g);
    const __m512i first = _mm512_setzero_si512(), second = _mm512_set1_epi32(8);
    for (int i = 0; i < B::QK / 32; ++i) {
        const __m512i codes = (__m512i)g.w[i];
        __m512 lo = _mm512_mul_ps(_mm512_cvtpbh_ps((__m256bh)_mm512_castsi512_si256(codes)),
                                  _mm512_permutexvar_ps(first, g.s[i]));
        __m512 hi = _mm512_mul_ps(_mm512_cvtpbh_ps((__m256bh)_mm512_extracti64x4_epi64(codes, 1)),
                                  _mm512_permutexvar_ps(second, g.s[i]));
        if constexpr (B::MIN) {
            lo = _mm512_add_ps(lo, _mm512_set1_ps(g.mn[i])), hi = _mm512_add_ps(hi, _mm512_set1_ps(g.mn[i]));
        }
        _mm512_storeu_ps(y + 32 * i, lo), _mm512_storeu_ps(y + 32 * i + 16, hi);
    }
}
#endif

// rows [rows, bytes] of one type into float32 y [rows, cols]
void dequantize_rows(const uint8_t* rows, int64_t type, int64_t count, int64_t cols, float* y) {
    by_type(type, [&](auto block) {
        using B = decltype(block);
        const int64_t blocks = cols / B::QK;
        at::parallel_for(0, count, 16, [&](int64_t begin, int64_t end) {
            for (int64_t r = begin; r < end; ++r)
                for (int64_t k = 0; k < blocks; ++k) {
                    const uint8_t* block = rows + (r * blocks + k) * B::BYTES;
#ifdef BF16_DOT
                    widen<B>(block, y + r * cols + k * B::QK);
#else
                    B::dequantize(block, y + r * cols + k * B::QK);
#endif
                }
        });
    });
}

#ifdef BF16_DOT
// The activations as the direct kernel reads them: each float32 as a bfloat16 pair, hi the nearest bfloat16 and lo
// the nearest to what hi misses, and each group of 32's sum (for the types whose weights carry a constant).
struct Split {
    std::vector<uint16_t> hi, lo;
    std::vector<float> sums;
    int64_t rows, cols;
    explicit Split(const Tensor& x) : rows(x.size(0)), cols(x.size(1)) {
        const float* v = x.data_ptr<float>();
        hi.resize(rows * cols), lo.resize(rows * cols), sums.resize(rows * cols / 32);
        for (int64_t i = 0; i < rows * cols; i += 16) {
            const __m512 f = _mm512_loadu_ps(v + i);
            const __m256bh h = _mm512_cvtneps_pbh(f);
            const __m512 back = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32((__m256i)h), 16));
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(&hi[i]), (__m256i)h);
            const __m256bh l = _mm512_cvtneps_pbh(_mm512_sub_ps(f, back));
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(&lo[i]), (__m256i)l);
        }
        for (int64_t g = 0; g < rows * cols / 32; ++g) {
            float sum = 0;
            for (int j = 0; j < 32; ++j) sum += v[32 * g + j];
            sums[g] = sum;
        }
    }
};

// Output column n for MT activation rows starting at m0; CHAINS accumulators a row so that few rows still keep the
// FMA pipeline full (one accumulator would wait on the previous block's sum).
template <typename B, int MT>
void dot_rows(const uint8_t* row, int64_t K, const uint16_t* hi, const uint16_t* lo, const float* sums, float* out,
              int64_t ldo) {
    constexpr int G = B::QK / 32, CHAINS = MT >= 4 ? 1 : 4 / MT;
    __m512 acc[MT][CHAINS];
    float constant[MT];
    for (int m = 0; m < MT; ++m) {
        for (int c = 0; c < CHAINS; ++c) acc[m][c] = _mm512_setzero_ps();
        constant[m] = 0;
    }
    const auto block = [&](int64_t b, int chain) {  // chain: a constant once the loops below are unrolled
        Groups<G> g;
        B::groups(row + b * B::BYTES, g);
#pragma GCC unroll 8
        for (int i = 0; i < G; ++i) {
            const int64_t at = (b * G + i) * 32;
            const int c = (chain * G + i) % CHAINS;
            for (int m = 0; m < MT; ++m) {
                const auto h = (__m512bh)_mm512_loadu_si512(hi + m * K + at);
                const auto l = (__m512bh)_mm512_loadu_si512(lo + m * K + at);
                const __m512 t = _mm512_dpbf16_ps(_mm512_dpbf16_ps(_mm512_setzero_ps(), g.w[i], h), g.w[i], l);
                acc[m][c] = _mm512_fmadd_ps(t, g.s[i], acc[m][c]);
                if constexpr (B::MIN) constant[m] += g.mn[i] * sums[m * (K / 32) + b * G + i];
            }
        }
    };
    const int64_t blocks = K / B::QK;
    int64_t b = 0;
    for (; b + CHAINS <= blocks; b += CHAINS) {
#pragma GCC unroll 4
        for (int chain = 0; chain < CHAINS; ++chain) block(b + chain, chain);
    }
    for (; b < blocks; ++b) block(b, 0);
    for (int m = 0; m < MT; ++m) {
        for (int c = 1; c < CHAINS; ++c) acc[m][0] = _mm512_add_ps(acc[m][0], acc[m][c]);
        out[m * ldo] = _mm512_reduce_add_ps(acc[m][0]) + constant[m];
    }
}

template <typename B, int MT = TILE>
void dot_tile(int mt, const uint8_t* row, int64_t K, const uint16_t* hi, const uint16_t* lo, const float* sums,
              float* out, int64_t ldo) {
    if constexpr (MT > 1) {
        if (mt < MT) return dot_tile<B, MT - 1>(mt, row, K, hi, lo, sums, out, ldo);
    }
    dot_rows<B, MT>(row, K, hi, lo, sums, out, ldo);
}

void direct(const Split& x, const uint8_t* blocks, int64_t type, int64_t rows, float* out, int64_t ldo) {
    const int64_t M = x.rows, K = x.cols, bytes = row_bytes(type, K);
    const uint16_t *hi = x.hi.data(), *lo = x.lo.data();
    const float* sums = x.sums.data();
    by_type(type, [&](auto block) {
        using B = decltype(block);
        at::parallel_for(0, rows, 8, [&](int64_t begin, int64_t end) {
            for (int64_t n = begin; n < end; ++n)
                for (int64_t m0 = 0; m0 < M; m0 += TILE)
                    dot_tile<B>(int(std::min<int64_t>(TILE, M - m0)), blocks + n * bytes, K, hi + m0 * K,
                                lo + m0 * K, sums + m0 * (K / 32), out + m0 * ldo + n, ldo);
        });
    });
}
#endif

}  // namespace

#ifdef BF16_DOT
const bool GGML_DIRECT = true;
#else
const bool GGML_DIRECT = false;
#endif

Tensor ggml_dequantize(const Tensor& rows, int64_t type, int64_t cols) {
    TORCH_CHECK(rows.dtype() == at::kByte && rows.is_contiguous() && rows.dim() == 2, "rows: uint8 [R, row bytes]");
    TORCH_CHECK(rows.size(1) == row_bytes(type, cols), "rows of ", rows.size(1), " bytes are not ", cols,
                " weights of GGML type ", type);
    Tensor y = at::empty({rows.size(0), cols}, rows.options().dtype(at::kFloat));
    dequantize_rows(rows.data_ptr<uint8_t>(), type, rows.size(0), cols, y.data_ptr<float>());
    return y;
}

Tensor ggml_matmul(const Tensor& x_in, const Tensor& blocks, const Tensor& segments, int64_t widen_from) {
    RECORD_FUNCTION("ggml_matmul", std::vector<c10::IValue>());  // a part of its own in torch's profiler
    TORCH_CHECK(x_in.dim() == 2 && x_in.dtype() == at::kFloat, "x: float32 [rows, inputs]");
    TORCH_CHECK(blocks.dtype() == at::kByte && blocks.is_contiguous() && segments.dtype() == at::kLong &&
                    segments.dim() == 2 && segments.size(1) == 2,
                "blocks: uint8 bytes; segments: int64 [S, 2] (type, rows)");
    const Tensor x = x_in.contiguous();
    const int64_t M = x.size(0), K = x.size(1);
    const Tensor table = segments.contiguous();
    const int64_t* seg = table.data_ptr<int64_t>();
    int64_t N = 0, bytes = 0;
    for (int64_t s = 0; s < table.size(0); ++s) N += seg[2 * s + 1], bytes += seg[2 * s + 1] * row_bytes(seg[2 * s], K);
    TORCH_CHECK(bytes == blocks.numel(), "the segments describe ", bytes, " bytes; the blocks hold ", blocks.numel());
    Tensor out = at::empty({M, N}, x.options());
#ifdef BF16_DOT
    std::optional<Split> split;
    if (M < widen_from) split.emplace(x);
#endif
    const uint8_t* w = blocks.data_ptr<uint8_t>();
    int64_t col = 0;
    Tensor scratch, product = at::empty({0}, x.options());  // one widened slice and its product, reused
    for (int64_t s = 0; s < table.size(0); ++s) {
        const int64_t type = seg[2 * s], rows = seg[2 * s + 1], stride = row_bytes(type, K);
#ifdef BF16_DOT
        if (split) {
            direct(*split, w, type, rows, out.data_ptr<float>() + col, N);
            w += rows * stride, col += rows;
            continue;
        }
#endif
        for (int64_t r = 0; r < rows; r += WIDEN_ROWS) {
            const int64_t count = std::min(WIDEN_ROWS, rows - r);
            if (!scratch.defined()) scratch = at::empty({std::min(WIDEN_ROWS, N), K}, x.options());
            Tensor wide = scratch.narrow(0, 0, count);
            dequantize_rows(w + r * stride, type, count, K, wide.data_ptr<float>());
            product.resize_({M, count});
            at::mm_out(product, x, wide.t());
            out.narrow(1, col + r, count).copy_(product);
        }
        w += rows * stride, col += rows;
    }
    return out;
}
