// gemm_ceiling.hpp: the matrix-multiply ceiling that MFU divides by, measured in the same process as the
// training steps (so it sees the same machine load).
//
// Two numbers:
//   model shapes: every projection of the model (q, k, v, o, gate, up, down per layer, and the output head as one
//                 product) run as the three products a training step needs (forward x W^T, input gradient dy W,
//                 weight gradient dy^T x with beta = 1), timed once each and weighted by how often the step runs
//                 them. GFLOP/s = their FLOPs / their time: the speed of a step that did nothing but its GEMMs.
//   square:       one 2048 x 2048 x 2048 product, the backend at its best.
#pragma once

#include "bench_configs.hpp"

#include <tinylm/backend/backend.hpp>
#include <tinylm/core/rng.hpp>

#include <vector>

namespace bench {

struct gemm_ceiling_result {
    double model_shapes_gflops = 0;  // FLOP-weighted over the step's products
    double square_gflops = 0;        // 2048^3
    double model_shapes_seconds = 0; // time of all the step's products, once each (per step)
};

namespace detail {
inline std::vector<float> random_floats(std::size_t n, std::uint64_t seed) {
    tl::counter_rng rng(seed);
    std::vector<float> v(n);
    for (float& x : v)
        x = float(rng.uniform() - 0.5);
    return v;
}

// Median seconds of `reps` runs of g, after one untimed run.
template <class B>
double time_gemm(const tl::gemm_args<float>& g, int reps) {
    B::gemm(g);
    std::vector<double> t;
    for (int r = 0; r < reps; ++r) {
        const double t0 = now_seconds();
        B::gemm(g);
        t.push_back(now_seconds() - t0);
    }
    return median(t);
}
} // namespace detail

// rows: tokens per step (batch x time).
template <class B>
gemm_ceiling_result measure_gemm_ceiling(const tl::model_config& c, tl::index_t rows, int reps = 3) {
    struct proj {
        tl::index_t out, in, count;
    };
    const tl::index_t d = c.d_model, qw = c.q_width(), kvw = c.kv_width(), ff = c.d_ff, L = c.n_layers;
    const std::vector<proj> projs = {{qw, d, L},     {kvw, d, 2 * L}, {d, qw, L},
                                     {ff, d, 2 * L}, {d, ff, L},      {c.vocab_size, d, 1}};
    tl::index_t max_in = 0, max_out = 0;
    for (const proj& p : projs) {
        max_in = std::max(max_in, p.in);
        max_out = std::max(max_out, p.out);
    }
    const auto x = detail::random_floats(std::size_t(rows * max_in), 1);
    const auto dy = detail::random_floats(std::size_t(rows * max_out), 2);
    const auto w = detail::random_floats(std::size_t(max_out * max_in), 3);
    std::vector<float> y(std::size_t(rows * std::max(max_in, max_out))), dw(std::size_t(max_out * max_in));

    double flops = 0, seconds = 0;
    for (const proj& p : projs) {
        const tl::index_t n = rows, o = p.out, i = p.in;
        const tl::gemm_args<float> forward{.trans_b = true,
                                           .m = n,
                                           .n = o,
                                           .k = i,
                                           .a = x.data(),
                                           .lda = i,
                                           .b = w.data(),
                                           .ldb = i,
                                           .c = y.data(),
                                           .ldc = o};
        const tl::gemm_args<float> input_grad{
            .m = n, .n = i, .k = o, .a = dy.data(), .lda = o, .b = w.data(), .ldb = i, .c = y.data(), .ldc = i};
        const tl::gemm_args<float> weight_grad{.trans_a = true,
                                               .m = o,
                                               .n = i,
                                               .k = n,
                                               .a = dy.data(),
                                               .lda = o,
                                               .b = x.data(),
                                               .ldb = i,
                                               .beta = 1.0f,
                                               .c = dw.data(),
                                               .ldc = i};
        const double t = detail::time_gemm<B>(forward, reps) + detail::time_gemm<B>(input_grad, reps) +
                         detail::time_gemm<B>(weight_grad, reps);
        seconds += double(p.count) * t;
        flops += double(p.count) * 3 * 2.0 * double(n) * double(o) * double(i);
    }
    gemm_ceiling_result r;
    r.model_shapes_seconds = seconds;
    r.model_shapes_gflops = flops / seconds * 1e-9;

    const tl::index_t s = 2048;
    const auto a = detail::random_floats(std::size_t(s * s), 4), b = detail::random_floats(std::size_t(s * s), 5);
    std::vector<float> cm(std::size_t(s * s));
    const tl::gemm_args<float> square{
        .m = s, .n = s, .k = s, .a = a.data(), .lda = s, .b = b.data(), .ldb = s, .c = cm.data(), .ldc = s};
    r.square_gflops = 2.0 * double(s) * double(s) * double(s) / detail::time_gemm<B>(square, reps) * 1e-9;
    return r;
}

} // namespace bench
