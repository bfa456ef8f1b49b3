// A model.safetensors: the header is parsed and every tensor of a readable dtype is converted, so the byte ranges
// the header declares are checked against the data section before anything is read.
#include "../fuzz_target.hpp"

#include <tinylm/io/safetensors.hpp>

TINYLM_FUZZ_TARGET(safetensors) {
    const auto path = tl_fuzz::scratch::get().write("model.safetensors", in);
    const tl::safetensors_reader r(path);
    for (const auto& [name, t] : r.tensors()) {
        tl::shape s;
        if (t.dtype == "I32" || t.dtype == "I64") {
            (void)r.read_all<std::int64_t>(name, &s);
        } else if (t.dtype == "F32" || t.dtype == "F64" || t.dtype == "F16" || t.dtype == "BF16") {
            const auto values = r.read_all<float>(name, &s);
            tl_fuzz::require(values.size() == std::size_t(s.numel()), "read_all returned a wrong element count");
        }
    }
}
