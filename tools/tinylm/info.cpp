// tinylm info: what a model folder (or a GGUF file) holds, read from its files without loading the weights:
// architecture, sizes, parameter count, tensor dtypes, tokenizer, special tokens, chat template, sampling defaults,
// adapter.
#include "common.hpp"

#include <tinylm/io/gguf_folder.hpp>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>

namespace tinylm_cli {

namespace {

struct info_flags {
    fs::path dir, adapter;
    bool json = false;
};

// The JSON header of a safetensors file (8-byte little-endian length, then the header).
nlohmann::json safetensors_header(const fs::path& file) {
    std::ifstream in(file, std::ios::binary);
    tl::check(bool(in), [&] { return "tinylm info: cannot open " + file.string(); });
    unsigned char len_bytes[8] = {};
    in.read(reinterpret_cast<char*>(len_bytes), 8);
    std::uint64_t len = 0;
    for (int i = 7; i >= 0; --i)
        len = (len << 8) | len_bytes[i];
    tl::check(bool(in) && len < (1u << 30), [&] { return "tinylm info: " + file.string() + " is not safetensors"; });
    std::string header(len, '\0');
    in.read(header.data(), std::streamsize(len));
    tl::check(bool(in), [&] { return "tinylm info: " + file.string() + " is truncated"; });
    try {
        return nlohmann::json::parse(header);
    } catch (const nlohmann::json::exception& e) {
        tl::fail("tinylm info: " + file.string() + ": invalid header: " + e.what());
    }
}

// dtype -> tensor count over model.safetensors or every shard of the index.
std::map<std::string, int> tensor_dtypes(const fs::path& dir) {
    std::vector<fs::path> files;
    if (fs::exists(dir / "model.safetensors")) {
        files.push_back(dir / "model.safetensors");
    } else if (fs::exists(dir / "model.safetensors.index.json")) {
        const nlohmann::json index = tl::detail::read_json_file(dir / "model.safetensors.index.json", "tinylm info");
        std::set<std::string> shards;
        if (index.contains("weight_map") && index["weight_map"].is_object())
            for (const auto& [name, file] : index["weight_map"].items())
                if (file.is_string()) shards.insert(file.get<std::string>());
        for (const std::string& s : shards)
            files.push_back(dir / s);
    }
    std::map<std::string, int> counts;
    for (const fs::path& f : files) { // the JSON header only: the weights are not read
        const nlohmann::json header = safetensors_header(f);
        for (const auto& item : header.items())
            if (item.key() != "__metadata__" && item.value().is_object() && item.value().contains("dtype"))
                ++counts[item.value()["dtype"].get<std::string>()];
    }
    return counts;
}

nlohmann::ordered_json describe(const info_flags& f) {
    nlohmann::ordered_json out;
    std::optional<tl::gguf::reader> file; // a GGUF file: its metadata and tensor table (io/gguf_folder.hpp)
    if (fs::is_regular_file(f.dir)) file.emplace(f.dir);
    const tl::hf_folder folder = file ? tl::read_gguf_folder(*file) : tl::read_hf_folder(f.dir);
    out[file ? "file" : "folder"] = fs::absolute(f.dir).lexically_normal().string();
    const std::string model_type = folder.config.value("model_type", "");
    out["model_type"] = model_type;
    if (model_type == "bert") {
        out["architecture"] = "BertModel (encoder; use the tl::encoder API or 09_retrieval)";
        for (const char* k : {"hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                              "max_position_embeddings", "vocab_size"})
            if (folder.config.contains(k)) out[k] = folder.config[k];
    } else {
        const tl::model_config c = file ? tl::gguf_model_config(*file) : tl::read_hf_folder_config(f.dir);
        out["architecture"] = tl::hf_architecture(c);
        out["parameters"] = tl::parameter_count(c);
        out["layers"] = c.n_layers;
        out["hidden_size"] = c.d_model;
        out["heads"] = c.n_heads;
        out["kv_heads"] = c.n_kv_heads;
        out["head_dim"] = c.head_dim();
        out["intermediate_size"] = c.d_ff;
        out["context"] = c.max_seq_len;
        out["vocab_size"] = c.vocab_size;
        out["tied_embeddings"] = c.tied_embeddings;
        out["rope_theta"] = c.rope_theta;
        if (c.qkv_bias) out["qkv_bias"] = true;
        if (c.qk_norm) out["qk_norm"] = true;
        if (c.sliding_window > 0) out["sliding_window"] = c.sliding_window;
        if (c.moe.n_experts > 0) out["experts"] = {{"count", c.moe.n_experts}, {"per_token", c.moe.top_k}};
    }
    std::map<std::string, int> counts;
    if (file)
        for (const tl::gguf::tensor_info& t : file->tensors())
            ++counts[tl::gguf::type_name(t.type)];
    else
        counts = tensor_dtypes(f.dir);
    nlohmann::ordered_json dtypes = nlohmann::ordered_json::object();
    for (const auto& [dtype, n] : counts)
        dtypes[dtype] = n;
    out["tensor_dtypes"] = dtypes;
    if (folder.tokenizer) {
        const tl::tokenizer& t = *folder.tokenizer;
        out["tokenizer"] = {
            {"tokens", t.vocab_size()}, {"added_tokens", t.added_tokens().size()}, {"byte_level", t.model.byte_level}};
    } else {
        out["tokenizer"] = nullptr;
    }
    out["special_tokens"] = {{"bos", folder.special.bos}, {"eos", folder.special.eos}, {"pad", folder.special.pad}};
    out["chat_template"] = bool(folder.chat);
    const tl::hf_generation_config& g = folder.generation;
    out["generation"] = {{"do_sample", g.do_sample},
                         {"temperature", g.temperature},
                         {"top_k", g.top_k},
                         {"top_p", g.top_p},
                         {"min_p", g.min_p},
                         {"repetition_penalty", g.repetition_penalty},
                         {"max_new_tokens", g.max_new_tokens},
                         {"eos_token_ids", g.eos_token_ids}};
    if (!f.adapter.empty()) {
        const nlohmann::json a = tl::detail::read_json_file(f.adapter / "adapter_config.json", "tinylm info");
        out["adapter"] = {{"folder", f.adapter.string()},
                          {"peft_type", a.value("peft_type", "")},
                          {"r", a.value("r", 0)},
                          {"lora_alpha", a.value("lora_alpha", 0.0)},
                          {"target_modules", a.contains("target_modules") ? a["target_modules"] : nullptr}};
    }
    if (!file && fs::exists(f.dir / "README.md")) out["model_card"] = (f.dir / "README.md").string();
    return out;
}

int run(const info_flags& f) {
    const nlohmann::ordered_json d = describe(f);
    if (f.json) {
        std::cout << d.dump(2) << "\n";
        return 0;
    }
    for (const auto& [key, value] : d.items())
        std::cout << key << ": " << (value.is_string() ? value.get<std::string>() : value.dump()) << "\n";
    return 0;
}

} // namespace

void add_info(CLI::App& app, command& chosen) {
    auto f = std::make_shared<info_flags>();
    CLI::App* sub = app.add_subcommand(
        "info", "describe a model folder or GGUF file (architecture, sizes, tensor types, tokenizer, defaults)");
    sub->add_option("dir", f->dir, "model folder, or a GGUF file")->required()->check(existing_model_path());
    sub->add_option("--adapter", f->adapter, "PEFT adapter folder to describe too")->check(CLI::ExistingDirectory);
    sub->add_flag("--json", f->json, "print JSON");
    sub->callback([f, &chosen] { chosen = [f] { return run(*f); }; });
}

} // namespace tinylm_cli
