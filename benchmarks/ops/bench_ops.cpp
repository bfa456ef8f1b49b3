// bench_ops: the hot ops of a training step at config B's shapes (batch 8 x 512 = 4096 rows, d 512, F 1536,
// V 8000, 8 query heads and 4 key/value heads of 64), each first checked and then timed (issue 6).
//
// Checks (before any timing; the program aborts with the largest difference when one fails):
//   linear and the head's chunked cross-entropy, forward and backward: the default backend (oneDNN) against
//     reference_cpu (naive, double accumulation) on random inputs, on the first rows (the reference is slow);
//   attention, forward and backward: the tiled f32 kernels that training runs against the straightforward
//     reference kernels in f64;
//   RMSNorm and SwiGLU, forward and backward: these ops have one generic implementation, so the f32
//     instantiation that training runs is checked against the same op in f64 (the reference's precision).
// Error metric: max |fast - reference| / max |reference| per tensor (docs/testing.md).
//
//   build-speed/benchmarks/ops/bench_ops --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
#include "../train_throughput/bench_configs.hpp"

#include <tinylm/backend/default.hpp>
#include <tinylm/core/rng.hpp>
#include <tinylm/ops/activation.hpp>
#include <tinylm/ops/attention.hpp>
#include <tinylm/ops/cross_entropy.hpp>
#include <tinylm/ops/linear.hpp>
#include <tinylm/ops/rmsnorm.hpp>

#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

using fast = tl::default_backend;
using tl::index_t;

constexpr index_t rows = 8 * 512, d = 512, ff = 1536, vocab = 8000, heads = 8, kv_heads = 4, head_dim = 64;

template <class T>
std::vector<T> random_vector(index_t n, std::uint64_t seed, double scale = 1.0) {
    tl::counter_rng rng(seed);
    std::vector<T> v(static_cast<std::size_t>(n));
    for (T& x : v)
        x = T(rng.normal() * scale);
    return v;
}
template <class T, class U>
std::vector<T> cast(const std::vector<U>& v) {
    return std::vector<T>(v.begin(), v.end());
}
template <class T>
tl::tensor_view<T> view(std::vector<T>& v, tl::shape s) {
    return {v.data(), s};
}

// max |got - want| / max |want| over n elements; aborts the program above tol.
template <class T, class U>
void expect_close(const char* what, const T* got, const U* want, index_t n, double tol) {
    double diff = 0, scale = 0;
    for (index_t i = 0; i < n; ++i) {
        diff = std::max(diff, std::abs(double(got[i]) - double(want[i])));
        scale = std::max(scale, std::abs(double(want[i])));
    }
    const double rel = scale > 0 ? diff / scale : diff;
    std::printf("check %-34s max relative difference %.2e (limit %.0e)\n", what, rel, tol);
    if (!(rel <= tol) || scale == 0) {
        std::fprintf(stderr, "bench_ops: %s differs from the reference (%.3e > %.0e); not timing\n", what, rel, tol);
        std::abort();
    }
}

// ---- checks -------------------------------------------------------------------------------------------

void check_linear() {
    const index_t n = 32, in = d, out = ff;
    auto x = random_vector<float>(n * in, 1), w = random_vector<float>(out * in, 2, 0.05),
         dy = random_vector<float>(n * out, 3);
    std::vector<float> y(n * out), y_ref(n * out), dx(n * in), dx_ref(n * in), dw(out * in, 0.0f),
        dw_ref(out * in, 0.0f);
    tl::linear_forward<fast, float>(view(y, {n, out}), view(x, {n, in}), view(w, {out, in}));
    tl::linear_forward<tl::reference_cpu, float>(view(y_ref, {n, out}), view(x, {n, in}), view(w, {out, in}));
    expect_close("linear forward", y.data(), y_ref.data(), n * out, 1e-5);
    tl::linear_backward<fast, float>(view(dx, {n, in}), view(dw, {out, in}), {}, view(dy, {n, out}), view(x, {n, in}),
                                     view(w, {out, in}));
    tl::linear_backward<tl::reference_cpu, float>(view(dx_ref, {n, in}), view(dw_ref, {out, in}), {},
                                                  view(dy, {n, out}), view(x, {n, in}), view(w, {out, in}));
    expect_close("linear backward dx", dx.data(), dx_ref.data(), n * in, 1e-5);
    expect_close("linear backward dW", dw.data(), dw_ref.data(), out * in, 1e-5);
}

void check_cross_entropy() {
    const index_t n = 32, chunk = 4096;
    auto h = random_vector<float>(n * d, 4), w = random_vector<float>(vocab * d, 5, 0.05);
    std::vector<tl::token_t> targets(n);
    tl::counter_rng rng(6);
    for (auto& t : targets)
        t = tl::token_t(rng.below(vocab));
    targets[3] = tl::ignore_index;
    struct out {
        std::vector<float> lse, dh, dw;
        double loss;
    };
    auto run = [&]<class B>(B) {
        tl::arena a(std::size_t(n) * chunk * 4 + std::size_t(n) * 16 + 1024);
        const auto ws = tl::cross_entropy_workspace<float>::allocate(a, n, chunk);
        out o{std::vector<float>(n), std::vector<float>(n * d), std::vector<float>(vocab * d, 0.0f), 0};
        const tl::cview<tl::token_t> t{targets.data(), {n}};
        o.loss = tl::head_cross_entropy_forward<B, float>(view(o.lse, {n}), ws, view(h, {n, d}), view(w, {vocab, d}), t)
                     .loss;
        tl::head_cross_entropy_backward<B, float>(view(o.dh, {n, d}), view(o.dw, {vocab, d}), ws, view(h, {n, d}),
                                                  view(w, {vocab, d}), t, view(o.lse, {n}));
        return o;
    };
    const out f = run(fast{}), r = run(tl::reference_cpu{});
    expect_close("cross-entropy loss", &f.loss, &r.loss, 1, 1e-5);
    expect_close("cross-entropy lse", f.lse.data(), r.lse.data(), n, 1e-5);
    expect_close("cross-entropy backward dh", f.dh.data(), r.dh.data(), n * d, 1e-4);
    expect_close("cross-entropy backward dW", f.dw.data(), r.dw.data(), vocab * d, 1e-4);
}

template <class T>
struct attention_run {
    std::vector<T> out, lse, dq, dk, dv;
};
template <class T, bool reference>
attention_run<T> run_attention(index_t b, index_t t, const std::vector<double>& q, const std::vector<double>& k,
                               const std::vector<double>& v, const std::vector<double>& dout) {
    auto qt = cast<T>(q), kt = cast<T>(k), vt = cast<T>(v), dot = cast<T>(dout);
    const tl::shape qs{b, t, heads, head_dim}, ks{b, t, kv_heads, head_dim};
    attention_run<T> r{std::vector<T>(qt.size()), std::vector<T>(std::size_t(b * heads * t)), std::vector<T>(qt.size()),
                       std::vector<T>(kt.size()), std::vector<T>(kt.size())};
    const auto forward = reference ? tl::attention_forward_reference<T> : tl::attention_forward<T>;
    const auto backward = reference ? tl::attention_backward_reference<T> : tl::attention_backward<T>;
    forward(view(r.out, qs), view(r.lse, {b, heads, t}), view(qt, qs), view(kt, ks), view(vt, ks), 0, 0, {}, true, {});
    backward(view(r.dq, qs), view(r.dk, ks), view(r.dv, ks), view(dot, qs), view(qt, qs), view(kt, ks), view(vt, ks),
             view(r.out, qs), view(r.lse, {b, heads, t}), 0, {}, true, {});
    return r;
}

// The tiled kernels (f32, as trained) against the straightforward reference kernels in f64; 300 queries, so
// that the last tile is partial.
void check_attention() {
    const index_t b = 1, t = 300;
    const auto q = random_vector<double>(b * t * heads * head_dim, 7),
               k = random_vector<double>(b * t * kv_heads * head_dim, 8),
               v = random_vector<double>(b * t * kv_heads * head_dim, 9),
               dout = random_vector<double>(b * t * heads * head_dim, 10);
    const auto f = run_attention<float, false>(b, t, q, k, v, dout);
    const auto r = run_attention<double, true>(b, t, q, k, v, dout);
    expect_close("attention forward", f.out.data(), r.out.data(), index_t(r.out.size()), 1e-5);
    expect_close("attention backward dq", f.dq.data(), r.dq.data(), index_t(r.dq.size()), 1e-4);
    expect_close("attention backward dk", f.dk.data(), r.dk.data(), index_t(r.dk.size()), 1e-4);
    expect_close("attention backward dv", f.dv.data(), r.dv.data(), index_t(r.dv.size()), 1e-4);
}

void check_rmsnorm_swiglu() {
    const index_t n = 256;
    const auto x = random_vector<double>(n * d, 11), w = random_vector<double>(d, 12),
               dy = random_vector<double>(n * d, 13);
    auto norm = [&]<class T>(T) {
        auto xt = cast<T>(x), wt = cast<T>(w), dyt = cast<T>(dy);
        std::vector<T> y(x.size()), rstd(n), dx(x.size()), dw(d, T(0));
        tl::rmsnorm_forward<T>(view(y, {n, d}), view(rstd, {n}), view(xt, {n, d}), view(wt, {d}), 1e-5);
        tl::rmsnorm_backward<T>(view(dx, {n, d}), view(dw, {d}), view(dyt, {n, d}), view(xt, {n, d}), view(wt, {d}),
                                view(rstd, {n}));
        return std::vector<std::vector<T>>{y, dx, dw};
    };
    const auto nf = norm(float{});
    const auto nr = norm(double{});
    expect_close("rmsnorm forward", nf[0].data(), nr[0].data(), n * d, 1e-6);
    expect_close("rmsnorm backward dx", nf[1].data(), nr[1].data(), n * d, 1e-5);
    expect_close("rmsnorm backward dw", nf[2].data(), nr[2].data(), d, 1e-5);

    const auto g = random_vector<double>(n * ff, 14, 2.0), u = random_vector<double>(n * ff, 15),
               dh = random_vector<double>(n * ff, 16);
    auto act = [&]<class T>(T) {
        auto gt = cast<T>(g), ut = cast<T>(u), dht = cast<T>(dh);
        std::vector<T> h(g.size()), dg(g.size()), du(g.size());
        tl::swiglu_forward<T>(view(h, {n, ff}), view(gt, {n, ff}), view(ut, {n, ff}));
        tl::swiglu_backward<T>(view(dg, {n, ff}), view(du, {n, ff}), view(dht, {n, ff}), view(gt, {n, ff}),
                               view(ut, {n, ff}));
        return std::vector<std::vector<T>>{h, dg, du};
    };
    const auto sf = act(float{});
    const auto sr = act(double{});
    expect_close("swiglu forward", sf[0].data(), sr[0].data(), n * ff, 1e-6);
    expect_close("swiglu backward dgate", sf[1].data(), sr[1].data(), n * ff, 1e-6);
    expect_close("swiglu backward dup", sf[2].data(), sr[2].data(), n * ff, 1e-6);
}

// ---- timings (config B's full shapes, f32, the default backend) --------------------------------------

void gflops(benchmark::State& state, double flops) {
    state.counters["GFLOP/s"] =
        benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

// args: out, in (config B: q/o 512x512, k/v 256x512, gate/up 1536x512, down 512x1536)
void bm_linear_forward(benchmark::State& state) {
    const index_t out = state.range(0), in = state.range(1);
    auto x = random_vector<float>(rows * in, 1), w = random_vector<float>(out * in, 2, 0.05);
    std::vector<float> y(rows * out);
    for (auto _ : state)
        tl::linear_forward<fast, float>(view(y, {rows, out}), view(x, {rows, in}), view(w, {out, in}));
    gflops(state, 2.0 * rows * out * in);
}
void bm_linear_backward(benchmark::State& state) {
    const index_t out = state.range(0), in = state.range(1);
    auto x = random_vector<float>(rows * in, 1), w = random_vector<float>(out * in, 2, 0.05),
         dy = random_vector<float>(rows * out, 3);
    std::vector<float> dx(rows * in), dw(out * in, 0.0f);
    for (auto _ : state)
        tl::linear_backward<fast, float>(view(dx, {rows, in}), view(dw, {out, in}), {}, view(dy, {rows, out}),
                                         view(x, {rows, in}), view(w, {out, in}));
    gflops(state, 4.0 * rows * out * in);
}
#define LINEAR_SHAPES                                                                                                  \
    ->Args({512, 512})                                                                                                 \
        ->Args({256, 512})                                                                                             \
        ->Args({1536, 512})                                                                                            \
        ->Args({512, 1536})                                                                                            \
        ->Unit(benchmark::kMillisecond)                                                                                \
        ->UseRealTime()
BENCHMARK(bm_linear_forward) LINEAR_SHAPES;
BENCHMARK(bm_linear_backward) LINEAR_SHAPES;

// Tiled kernels (attention_forward / attention_backward: the best copy the CPU runs, AVX-512 where it has it),
// the same kernels at AVX2 at most (_avx2) and without their clones (the baseline x86-64 build of the tiles), and
// the straightforward reference kernels (attention_*_reference, what ran before) at config B's shapes.
enum class attention_kernel { tiled, tiled_avx2, tiled_baseline, reference };
template <attention_kernel kernel>
struct attention_inputs {
    static constexpr index_t b = 8, t = 512;
    static constexpr bool reference = kernel == attention_kernel::reference;
    std::vector<float> q = random_vector<float>(b * t * heads * head_dim, 7),
                       k = random_vector<float>(b * t * kv_heads * head_dim, 8),
                       v = random_vector<float>(b * t * kv_heads * head_dim, 9),
                       dout = random_vector<float>(b * t * heads * head_dim, 10), out = std::vector<float>(q.size()),
                       lse = std::vector<float>(b * heads * t), dq = std::vector<float>(q.size()),
                       dk = std::vector<float>(k.size()), dv = std::vector<float>(k.size());
    tl::shape qs{b, t, heads, head_dim}, ks{b, t, kv_heads, head_dim};
    attention_inputs() {
        tl::detail::allow_avx2_clones = kernel != attention_kernel::tiled_baseline;
        tl::detail::allow_avx512_clones = kernel == attention_kernel::tiled;
    }
    ~attention_inputs() { tl::detail::allow_avx2_clones = tl::detail::allow_avx512_clones = true; }
    void forward() {
        const auto f = reference ? tl::attention_forward_reference<float> : tl::attention_forward<float>;
        f(view(out, qs), view(lse, {b, heads, t}), view(q, qs), view(k, ks), view(v, ks), 0, 0, {}, true, {});
    }
    void backward() {
        const auto f = reference ? tl::attention_backward_reference<float> : tl::attention_backward<float>;
        f(view(dq, qs), view(dk, ks), view(dv, ks), view(dout, qs), view(q, qs), view(k, ks), view(v, ks),
          view(out, qs), view(lse, {b, heads, t}), 0, {}, true, {});
    }
    // score and value products over the causal half: 2 products x 2 FLOPs x B H T (T+1)/2 D
    static double forward_flops() { return 4.0 * b * heads * t * (t + 1) / 2.0 * head_dim; }
};
template <attention_kernel kernel>
void bm_attention_forward(benchmark::State& state) {
    attention_inputs<kernel> a;
    for (auto _ : state)
        a.forward();
    gflops(state, attention_inputs<kernel>::forward_flops());
}
template <attention_kernel kernel>
void bm_attention_backward(benchmark::State& state) {
    attention_inputs<kernel> a;
    a.forward();
    for (auto _ : state)
        a.backward();
    gflops(state, 2 * attention_inputs<kernel>::forward_flops()); // dq, dk, dv, dp: twice the forward's
}
#define ATTENTION_BENCHMARK(op, kernel, name)                                                                          \
    BENCHMARK(bm_attention_##op<attention_kernel::kernel>)->Name(name)->Unit(benchmark::kMillisecond)->UseRealTime()
ATTENTION_BENCHMARK(forward, tiled, "bm_attention_forward");
ATTENTION_BENCHMARK(backward, tiled, "bm_attention_backward");
ATTENTION_BENCHMARK(forward, tiled_avx2, "bm_attention_forward_avx2");
ATTENTION_BENCHMARK(backward, tiled_avx2, "bm_attention_backward_avx2");
ATTENTION_BENCHMARK(forward, tiled_baseline, "bm_attention_forward_baseline");
ATTENTION_BENCHMARK(backward, tiled_baseline, "bm_attention_backward_baseline");
ATTENTION_BENCHMARK(forward, reference, "bm_attention_forward_reference");
ATTENTION_BENCHMARK(backward, reference, "bm_attention_backward_reference");

// One decoding step's attention (time 1) over a cache of `keys` positions, head width 64: Hq query heads over Hkv
// key/value heads, f32 or bf16 cache (kv_bits 32 or 16), by the path the arguments choose (ops/attention.hpp,
// decodes_by_group): 0 each head by the row kernel, 1 a group as one tile product. Each iteration is the next of 24
// layers' caches (a 0.5B model's), so that the caches come from memory as in a model's step rather than from the cache
// of the previous iteration. Bytes: every cache element read once.
void bm_attention_decode(benchmark::State& state) {
    const index_t hq = state.range(0), hkv = state.range(1), keys = state.range(2), D = 64, layers = 24;
    const bool half = state.range(3) == 16;
    const index_t path = state.range(4);
    const index_t saved_min = tl::detail::min_decoding_group, saved_keys = tl::detail::min_group_keys;
    tl::detail::min_decoding_group = path == 0 ? hq + 1 : 2;
    tl::detail::min_group_keys = path == 0 ? keys + 1 : 0;
    const tl::shape qs{1, 1, hq, D}, ks{1, keys, hkv, D};
    auto q = random_vector<float>(hq * D, 7), out = std::vector<float>(q.size());
    std::vector<std::vector<float>> k, v;
    std::vector<std::vector<tl::bf16>> k16, v16;
    for (index_t l = 0; l < layers; ++l) {
        auto kl = random_vector<float>(keys * hkv * D, 8 + std::uint64_t(l)),
             vl = random_vector<float>(keys * hkv * D, 50 + std::uint64_t(l));
        if (half) {
            k16.emplace_back(kl.begin(), kl.end()), v16.emplace_back(vl.begin(), vl.end());
        } else {
            k.push_back(std::move(kl)), v.push_back(std::move(vl));
        }
    }
    index_t l = 0;
    for (auto _ : state) {
        if (half)
            tl::attention_forward<float, tl::bf16>(view(out, qs), {}, view(q, qs), view(k16[std::size_t(l)], ks),
                                                   view(v16[std::size_t(l)], ks), 0, keys - 1);
        else
            tl::attention_forward<float>(view(out, qs), {}, view(q, qs), view(k[std::size_t(l)], ks),
                                         view(v[std::size_t(l)], ks), 0, keys - 1);
        l = (l + 1) % layers;
    }
    benchmark::DoNotOptimize(out.data());
    state.SetBytesProcessed(state.iterations() * 2 * keys * hkv * D * (half ? 2 : 4));
    tl::detail::min_decoding_group = saved_min, tl::detail::min_group_keys = saved_keys;
}
BENCHMARK(bm_attention_decode)
    ->ArgNames({"hq", "hkv", "keys", "kv_bits", "path"})
    ->ArgsProduct({{14}, {2}, {256, 1000, 4000}, {32, 16}, {0, 1}})
    ->ArgsProduct({{8, 12}, {4}, {256, 512, 1000, 4000}, {32}, {0, 1}})
    ->ArgsProduct({{32}, {8}, {1000, 4000}, {32}, {0, 1}})
    ->ArgsProduct({{8}, {8}, {256, 1000, 4000}, {32, 16}, {0}}) // MHA: always the row kernel
    ->ArgsProduct({{14}, {7}, {1000, 3000}, {32, 16}, {0, 1}})
    ->ArgsProduct({{32}, {16}, {1000, 3000}, {32, 16}, {0, 1}}) // key rows 4 KB apart (f32)
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

void bm_rmsnorm_forward(benchmark::State& state) {
    auto x = random_vector<float>(rows * d, 11), w = random_vector<float>(d, 12);
    std::vector<float> y(rows * d), rstd(rows);
    for (auto _ : state)
        tl::rmsnorm_forward<float>(view(y, {rows, d}), view(rstd, {rows}), view(x, {rows, d}), view(w, {d}), 1e-5);
    state.SetBytesProcessed(state.iterations() * rows * d * 8);
}
void bm_rmsnorm_backward(benchmark::State& state) {
    auto x = random_vector<float>(rows * d, 11), w = random_vector<float>(d, 12),
         dy = random_vector<float>(rows * d, 13);
    std::vector<float> y(rows * d), rstd(rows), dx(rows * d), dw(d, 0.0f);
    tl::rmsnorm_forward<float>(view(y, {rows, d}), view(rstd, {rows}), view(x, {rows, d}), view(w, {d}), 1e-5);
    for (auto _ : state)
        tl::rmsnorm_backward<float>(view(dx, {rows, d}), view(dw, {d}), view(dy, {rows, d}), view(x, {rows, d}),
                                    view(w, {d}), view(rstd, {rows}), tl::grad_write::add);
    state.SetBytesProcessed(state.iterations() * rows * d * 12);
}
BENCHMARK(bm_rmsnorm_forward)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(bm_rmsnorm_backward)->Unit(benchmark::kMillisecond)->UseRealTime();

void bm_swiglu_forward(benchmark::State& state) {
    auto g = random_vector<float>(rows * ff, 14), u = random_vector<float>(rows * ff, 15);
    std::vector<float> h(rows * ff);
    for (auto _ : state)
        tl::swiglu_forward<float>(view(h, {rows, ff}), view(g, {rows, ff}), view(u, {rows, ff}));
    state.SetBytesProcessed(state.iterations() * rows * ff * 12);
}
void bm_swiglu_backward(benchmark::State& state) {
    auto g = random_vector<float>(rows * ff, 14), u = random_vector<float>(rows * ff, 15),
         dh = random_vector<float>(rows * ff, 16);
    std::vector<float> dg(rows * ff), du(rows * ff);
    for (auto _ : state)
        tl::swiglu_backward<float>(view(dg, {rows, ff}), view(du, {rows, ff}), view(dh, {rows, ff}),
                                   view(g, {rows, ff}), view(u, {rows, ff}));
    state.SetBytesProcessed(state.iterations() * rows * ff * 20);
}
BENCHMARK(bm_swiglu_forward)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(bm_swiglu_backward)->Unit(benchmark::kMillisecond)->UseRealTime();

struct head_inputs {
    static constexpr index_t chunk = 4096;
    tl::arena a{std::size_t(rows) * chunk * 4 + std::size_t(rows) * 16 + 1024};
    tl::cross_entropy_workspace<float> ws = tl::cross_entropy_workspace<float>::allocate(a, rows, chunk);
    std::vector<float> h = random_vector<float>(rows * d, 4), w = random_vector<float>(vocab * d, 5, 0.05),
                       lse = std::vector<float>(rows), dh = std::vector<float>(rows * d),
                       dw = std::vector<float>(vocab * d, 0.0f);
    std::vector<tl::token_t> targets = [] {
        std::vector<tl::token_t> t(rows);
        tl::counter_rng rng(6);
        for (auto& x : t)
            x = tl::token_t(rng.below(vocab));
        return t;
    }();
    tl::cview<tl::token_t> t{targets.data(), {rows}};
};
void bm_cross_entropy_forward(benchmark::State& state) {
    head_inputs in;
    for (auto _ : state)
        benchmark::DoNotOptimize(tl::head_cross_entropy_forward<fast, float>(
            view(in.lse, {rows}), in.ws, view(in.h, {rows, d}), view(in.w, {vocab, d}), in.t));
    gflops(state, 2.0 * rows * vocab * d);
}
void bm_cross_entropy_backward(benchmark::State& state) {
    head_inputs in;
    tl::head_cross_entropy_forward<fast, float>(view(in.lse, {rows}), in.ws, view(in.h, {rows, d}),
                                                view(in.w, {vocab, d}), in.t);
    for (auto _ : state)
        tl::head_cross_entropy_backward<fast, float>(view(in.dh, {rows, d}), view(in.dw, {vocab, d}), in.ws,
                                                     view(in.h, {rows, d}), view(in.w, {vocab, d}), in.t,
                                                     view(in.lse, {rows}));
    gflops(state, 6.0 * rows * vocab * d); // recomputed logits, dh and dW
}
BENCHMARK(bm_cross_entropy_forward)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(bm_cross_entropy_backward)->Unit(benchmark::kMillisecond)->UseRealTime();

} // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    std::printf("bench_ops: checking %s against the reference before timing\n", std::string(fast::name).c_str());
    check_linear();
    check_cross_entropy();
    check_attention();
    check_rmsnorm_swiglu();
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
