// GGUF weights multiplied as llama.cpp stores them (ggml_matmul.cpp); declared here for cpu_decode.cpp.
#pragma once
#include <torch/extension.h>

// x [M, K] float32 @ W.T, W's rows held as GGML blocks: `blocks` the bytes of every row, `segments` [S, 2] int64
// (GGML type, rows) in order, so one weight can stack q/k/v stored in different types.
at::Tensor ggml_matmul(const at::Tensor& x, const at::Tensor& blocks, const at::Tensor& segments);

// The most activation rows multiplied straight from the blocks (more are widened to float32); 0 where this CPU
// lacks AVX512-BF16 and every step widens.
extern const int64_t GGML_DIRECT_ROWS;

// Rows [R, row bytes] of one GGML type as float32 [R, cols]: the exact weights llama.cpp's blocks stand for.
at::Tensor ggml_dequantize(const at::Tensor& rows, int64_t type, int64_t cols);
