// Finite-difference gradient checking in double (the harness every op's test uses).
//
// The scalar checked is L = sum(out * R) for a fixed random R, so dL/dout = R feeds the backward pass.
// Each input element is perturbed by +-h and the central difference (L(x+h) - L(x-h)) / 2h is compared
// with the analytic gradient: error = max |analytic - numeric| / max(1, max |numeric|).
#pragma once

#include "random.hpp"

#include <functional>
#include <string>

namespace tl::test {

struct grad_input {
    std::string name;
    std::vector<double>* value;          // perturbed in place
    const std::vector<double>* analytic; // gradient computed by the op's backward
};

inline double weighted_sum(const std::vector<double>& out, const std::vector<double>& r) {
    double s = 0;
    for (std::size_t i = 0; i < out.size(); ++i)
        s += out[i] * r[i];
    return s;
}

// Returns the worst error over all inputs; reports each input's error through `report`.
inline double gradcheck(const std::function<double()>& loss, const std::vector<grad_input>& inputs,
                        const std::function<void(const std::string&, double)>& report, double h = 1e-6) {
    double worst = 0;
    for (const grad_input& in : inputs) {
        double diff = 0, scale = 1;
        for (std::size_t i = 0; i < in.value->size(); ++i) {
            double& x = (*in.value)[i];
            const double saved = x;
            x = saved + h;
            const double up = loss();
            x = saved - h;
            const double down = loss();
            x = saved;
            const double numeric = (up - down) / (2 * h);
            diff = std::max(diff, std::abs(numeric - (*in.analytic)[i]));
            scale = std::max(scale, std::abs(numeric));
        }
        report(in.name, diff / scale);
        worst = std::max(worst, diff / scale);
    }
    return worst;
}

} // namespace tl::test
