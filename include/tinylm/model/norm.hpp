// tinylm/model/norm.hpp: the normalisation layer of a block (RMSNorm or LayerNorm), forward and backward.
#pragma once

#include <tinylm/core/arena.hpp>
#include <tinylm/model/config.hpp>
#include <tinylm/model/slot.hpp>
#include <tinylm/ops/layernorm.hpp>
#include <tinylm/ops/rmsnorm.hpp>

namespace tl {

template <norm_kind Kind>
struct norm_layer {
    static constexpr bool has_bias = Kind == norm_kind::layernorm;
    // Per-row statistics the backward needs (mean only for LayerNorm).
    struct stats {
        tensor_view<float> mean, rstd;
        static stats allocate(arena& a, index_t rows) {
            return {has_bias ? a.allocate<float>({rows}) : tensor_view<float>{}, a.allocate<float>({rows})};
        }
    };

    tensor_view<float> weight, bias, dweight, dbias;
    double eps = 1e-5;

    template <class Visit>
    void walk(Visit&& visit, const std::string& prefix, index_t width) {
        visit(param_slot{prefix + ".weight", {width}, param_kind::norm, param_group::norm, &weight, &dweight});
        if constexpr (has_bias)
            visit(param_slot{prefix + ".bias", {width}, param_kind::bias, param_group::norm, &bias, &dbias});
    }

    void forward(tensor_view<float> y, const stats& s, cview<float> x) const {
        if constexpr (has_bias)
            layernorm_forward<float>(y, s.mean, s.rstd, x, weight, bias, eps);
        else
            rmsnorm_forward<float>(y, s.rstd, x, weight, eps);
    }
    void backward(tensor_view<float> dx, cview<float> dy, cview<float> x, const stats& s, grad_write mode) const {
        if constexpr (has_bias)
            layernorm_backward<float>(dx, dweight, dbias, dy, x, weight, s.mean, s.rstd, mode);
        else
            rmsnorm_backward<float>(dx, dweight, dy, x, weight, s.rstd, mode);
    }
};

} // namespace tl
