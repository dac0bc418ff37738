// GGUF weights multiplied as llama.cpp stores them (ggml_matmul.cpp); declared here for cpu_decode.cpp.
#pragma once
#include <torch/extension.h>

// x [M, K] float32 @ W.T, W's rows held as GGML blocks: `blocks` the bytes of every row, `segments` [S, 2] int64
// (GGML type, rows) in order, so one weight can stack q/k/v stored in different types. A step of fewer than
// `widen_from` rows multiplies the blocks directly (where this CPU has AVX512-BF16), a larger one widens them.
at::Tensor ggml_matmul(const at::Tensor& x, const at::Tensor& blocks, const at::Tensor& segments, int64_t widen_from);

// Whether this build multiplies blocks directly (AVX512-BF16); without it every step widens.
extern const bool GGML_DIRECT;

// Rows [R, row bytes] of one GGML type as float32 [R, cols]: the exact weights llama.cpp's blocks stand for.
at::Tensor ggml_dequantize(const at::Tensor& rows, int64_t type, int64_t cols);
