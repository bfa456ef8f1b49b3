// A GGUF file (what export-gguf writes, and what a user may hand back): header, metadata, tensor table and data,
// then the model configuration it describes.
#include "../fuzz_target.hpp"

#include <tinylm/io/gguf.hpp>

TINYLM_FUZZ_TARGET(gguf) {
    const auto path = tl_fuzz::scratch::get().write("model.gguf", in);
    const tl::gguf::reader r(path);
    for (const auto& t : r.tensors())
        (void)r.read_f32(t.name); // every block format's dequantisation on hostile bytes
    (void)tl::gguf_model_config(r);
}
