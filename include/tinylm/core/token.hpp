// tinylm/core/token.hpp: the type of a token id, shared by the tokenizer, the data pipeline, the ops and the
// models. Standard library only, so that the tokenizer and data headers need no math backend.
#pragma once

#include <cstdint>

namespace tl {

using token_t = std::int32_t;

} // namespace tl
