// tinylm/core/xtensor.hpp: view a tinylm tensor as an xtensor expression (no copy), for analysis code that
// wants NumPy-style operations. Needs tinylm::xtensor.
#pragma once

#include <tinylm/core/tensor.hpp>

#include <xtensor/xadapt.hpp>

#include <vector>

namespace tl {

template <class T>
auto as_xtensor(tensor_view<T> v) {
    std::vector<std::size_t> dims;
    for (int i = 0; i < v.shape.rank; ++i)
        dims.push_back(std::size_t(v.shape[i]));
    return xt::adapt(v.data, std::size_t(v.numel()), xt::no_ownership(), dims);
}

} // namespace tl
