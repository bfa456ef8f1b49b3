// examples/common/checkpoint_files.hpp: what a pretraining recipe puts into each checkpoint besides the weights,
// so that the folder works elsewhere without a hand fix: tokenizer.json, tokenizer_config.json naming <bos>,
// <eos> and <pad> with the context length (AutoTokenizer then knows them), and, through trainer_options,
// generation_config.json with the recipe's sampling defaults and a README.md model card.
#pragma once

#include "options.hpp"

#include <tinylm/io/hf_folder.hpp>
#include <tinylm/io/model_card.hpp>
#include <tinylm/tokenizer/tokenizer_config.hpp>

#include <filesystem>
#include <functional>
#include <string>

namespace recipes {

// The checkpoint hook writing the tokenizer files of `tok` (a tokenizer trained by the data stage: <bos>, <eos>,
// <pad> when it has them).
inline std::function<void(const std::filesystem::path&)> tokenizer_files(const tl::tokenizer& tok, int context) {
    return [&tok, context](const std::filesystem::path& dir) {
        tl::tokenizer_config_options o;
        auto named = [&](const char* t) -> std::optional<std::string> {
            return tok.token_to_id(t) >= 0 ? std::optional<std::string>(t) : std::nullopt;
        };
        o.bos = named("<bos>");
        o.eos = named("<eos>");
        o.pad = named("<pad>");
        o.model_max_length = context;
        tl::save_tokenizer_folder(tok, o, dir);
    };
}

// The recipe's sampling settings as the checkpoint's generation defaults, and its model card.
inline void describe_checkpoints(tl::trainer_options& o, const sampling_flags& s, tl::model_card_info card) {
    o.generation = tl::sampling_defaults(s.sampling, s.new_tokens);
    o.card = std::move(card);
}

} // namespace recipes
