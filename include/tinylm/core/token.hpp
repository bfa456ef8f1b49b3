// tinylm/core/token.hpp: the type of a token id, shared by the tokenizer, the data pipeline, the ops and the
// models. Standard library only, so that the tokenizer and data headers need no math backend.
#pragma once

#include <cstdint>

namespace tl {

using token_t = std::int32_t;

// The former name in the tokenizer. Kept only until examples/07_sft_instruct and examples/08_jokes_lora use
// token_t; do not use it in new code.
using token_id = token_t;

} // namespace tl
