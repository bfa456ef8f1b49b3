// examples/common/samples.hpp: a recipe's prompts continued by its model (during training and after), with the
// sampling settings of the Samples option group (options.hpp). Prompt i is sampled with seed + i.
#pragma once

#include "options.hpp"

#include <tinylm/eval/generate.hpp>
#include <tinylm/tokenizer/tokenizer.hpp>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace recipes {

// Each prompt after <bos>, continued by up to `new_tokens` tokens (stopping at <eos>); (prompt, continuation).
template <class Model>
std::vector<std::pair<std::string, std::string>>
continue_prompts(const Model& model, const tl::tokenizer& tok, const std::vector<std::string>& prompts, int new_tokens,
                 const tl::sampling_options& sampling, std::uint64_t seed) {
    std::vector<std::pair<std::string, std::string>> out;
    const tl::token_t bos = tok.token_to_id("<bos>"), eos = tok.token_to_id("<eos>");
    for (std::size_t i = 0; i < prompts.size(); ++i) {
        std::vector<tl::token_t> ids{bos};
        for (tl::token_t id : tok.encode(prompts[i]))
            ids.push_back(id);
        tl::generation_options g{.max_new_tokens = new_tokens, .stop_tokens = {eos}, .sampling = sampling};
        g.sampling.seed = seed + i;
        const auto gen = tl::generate(model, ids, g);
        out.emplace_back(prompts[i], tok.decode(std::vector<tl::token_t>(gen.begin(), gen.end()), true));
    }
    return out;
}

} // namespace recipes
