// tinylm/train/checkpoint_nf4.hpp: a QLoRA training checkpoint's NF4 base, byte for byte, so that a resume is
// bit-identical to a run that never stopped.
//
//   nf4_base.safetensors   for every NF4 projection <name> (model.layers.3.self_attn.q_proj.weight, ...):
//                            <name>.codes    U8 (out * in + 1) / 2   the packed 4-bit codes
//                            <name>.qabsmax  U8 (blocks)             the 8-bit codes of absmax - offset
//                            <name>.absmax2  F32 (blocks / 256)      the second-level scales
//                            <name>.offset   F32 (1)                 the mean subtracted from the scales
//                          (without double quantisation <name>.absmax, F32 (blocks), instead of the last three)
//
// Why the file: model.safetensors holds the base dequantised (what Hugging Face tools read), and quantising that
// again does not give back the bytes. The 4-bit codes come back (each dequantised weight is nf4[code] * scale, the
// block's largest +-scale), the scales need not: (1) the offset becomes the mean of the dequantised scales, not of
// the original absmax, so every 8-bit code and second-level scale is computed against another centre (a 256 x 512
// N(0, 0.02) weight: 4 of 2048 8-bit codes and 8 of 8 second-level scales differ); (2) even with the original
// offset passed to quantize_nf4 (which gives the bytes back for that weight), a block of 256 scales whose most
// extreme absmax - offset is negative dequantises it to -0.99296874 * absmax2 (the signed dynamic code has no -1), so
// absmax2 comes back 0.99296874 times smaller (measured on a weight with one near-zero block). Storing the offsets
// would fix (1) only; storing the NF4 bytes fixes both, at 0.52 bytes a weight beside model.safetensors' 4.
//
// The files stay what the tools read (transformers and peft ignore this one); a checkpoint without it (older
// tinylm) resumes as before, requantising model.safetensors. trainer_state.json's checksums cover it as every
// tensor file of the folder. On load, each stored weight must dequantise to model.safetensors' tensor bit for
// bit: a folder whose base was replaced is refused rather than resumed from a stale NF4 copy.
#pragma once

#include <tinylm/io/hf_checkpoint.hpp>
#include <tinylm/io/safetensors.hpp>
#include <tinylm/ops/nf4.hpp>

#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <type_traits>
#include <vector>

namespace tl {

inline constexpr const char* nf4_base_file = "nf4_base.safetensors";

// Writes nf4_base.safetensors into `stage` (a QLoRA model's checkpoint folder).
template <class Model>
void write_nf4_base(const Model& model, const fs::path& stage) {
    static_assert(has_quantized_base<Model>, "write_nf4_base: the model has no NF4 base (QLoRA)");
    safetensors_writer w;
    w.add_metadata("format", "tinylm-nf4");
    for (const auto& e : model.quantized_entries()) {
        const nf4_tensor& q = model.quantized_weight(e.layer, e.target);
        w.add_u8(e.name + ".codes", q.codes);
        if (q.double_quant) {
            w.add_u8(e.name + ".qabsmax", q.qabsmax);
            w.add<float>(e.name + ".absmax2", cview<float>{q.absmax2.data(), {index_t(q.absmax2.size())}});
            w.add<float>(e.name + ".offset", cview<float>{&q.offset, {1}});
        } else {
            w.add<float>(e.name + ".absmax", cview<float>{q.absmax.data(), {index_t(q.absmax.size())}});
        }
    }
    w.save(stage / nf4_base_file);
}

// When `dir` holds nf4_base.safetensors, replaces the model's NF4 projections (quantised from model.safetensors by
// the load before) with the stored bytes, each checked to dequantise to model.safetensors' tensor exactly.
// Returns false (the model untouched) when the file is absent.
template <class Model>
bool load_nf4_base(Model& model, const fs::path& dir) {
    static_assert(has_quantized_base<Model>, "load_nf4_base: the model has no NF4 base (QLoRA)");
    const fs::path path = dir / nf4_base_file;
    if (!fs::exists(path)) return false;
    const safetensors_reader r(path);
    std::vector<std::string> names;
    for (const auto& e : model.quantized_entries())
        names.push_back(e.name);
    const std::map<std::string, std::string> file_of = detail::hf_weight_files(dir, names);
    using entry_t = typename std::decay_t<decltype(model.quantized_entries())>::value_type;
    std::map<std::string, std::vector<const entry_t*>> by_file;
    for (const auto& e : model.quantized_entries())
        by_file[file_of.at(e.name)].push_back(&e);
    std::vector<float> stored, decoded;
    for (const auto& by : by_file) { // no structured binding: lambdas capture the file name
        const std::string& file = by.first;
        const auto& entries = by.second;
        const safetensors_reader base(dir / file); // model.safetensors (or a shard): one file at a time
        for (const auto* e : entries) {
            nf4_tensor q;
            q.out = e->shape[0], q.in = e->shape[1];
            q.codes = r.read_u8(e->name + ".codes");
            q.double_quant = r.contains(e->name + ".qabsmax");
            if (q.double_quant) {
                q.qabsmax = r.read_u8(e->name + ".qabsmax");
                q.absmax2 = r.read_all<float>(e->name + ".absmax2");
                const std::vector<float> offset = r.read_all<float>(e->name + ".offset");
                check(offset.size() == 1,
                      [&] { return "checkpoint: " + path.string() + ": " + e->name + ".offset must hold one value"; });
                q.offset = offset[0];
            } else {
                q.absmax = r.read_all<float>(e->name + ".absmax");
            }
            check_nf4("checkpoint: " + path.string(), q);
            stored.resize(std::size_t(e->shape.numel()));
            decoded.resize(stored.size());
            base.read(e->name, tensor_view<float>{stored.data(), e->shape});
            dequantize(q, tensor_view<float>{decoded.data(), e->shape});
            check(std::memcmp(stored.data(), decoded.data(), stored.size() * sizeof(float)) == 0, [&] {
                return "checkpoint: " + path.string() + ": " + e->name + " does not dequantise to the tensor of " +
                       (dir / file).string() + "; the base was changed after the checkpoint was written (delete " +
                       nf4_base_file + " to quantise it again)";
            });
            model.set_quantized_weight(e->layer, e->target, std::move(q));
        }
    }
    return true;
}

} // namespace tl
