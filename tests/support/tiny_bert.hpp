// tests/support/tiny_bert.hpp: a BERT-shaped configuration small enough for central differences and for tests
// that run it as several ranks (width 16, 2 layers of 4 heads, feed-forward 24, 2 token types, weights drawn with
// a large std so that every gradient is far from rounding noise).
#pragma once

#include <tinylm/model/families.hpp>

namespace tl_test {

constexpr tl::model_config tiny_bert(int vocab_size = 23, int max_seq_len = 12) {
    tl::model_config c = tl::families::bert::value;
    c.vocab_size = vocab_size, c.d_model = 16, c.n_layers = 2, c.n_heads = c.n_kv_heads = 4, c.d_head = 0;
    c.d_ff = 24, c.max_seq_len = max_seq_len, c.type_vocab_size = 2, c.norm_eps = 1e-12, c.init_std = 0.3;
    c.rope_theta = 10000;
    return c;
}

struct tiny_bert_config {
    static constexpr tl::model_config value = tiny_bert();
};

} // namespace tl_test
