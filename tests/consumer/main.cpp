// Builds a small model from a user-defined configuration and takes one training step.
#include <tinylm/tinylm.hpp>

#include <cstdio>
#include <vector>

struct my_model {
    static constexpr tl::model_config value{
        .vocab_size = 32, .d_model = 16, .n_layers = 1, .n_heads = 2, .n_kv_heads = 1, .d_ff = 32, .max_seq_len = 8};
};

int main() {
    tl::decoder<my_model> model(1);
    tl::adamw opt(model);
    std::vector<tl::token_t> ids{1, 2, 3, 4, 5, 6, 7, 8}, targets{2, 3, 4, 5, 6, 7, 8, 9};
    const float loss =
        model.loss(tl::cview<tl::token_t>{ids.data(), {1, 8}}, tl::cview<tl::token_t>{targets.data(), {1, 8}});
    model.backward();
    opt.step();
    std::printf("consumer: %lld parameters, loss %.4f\n", static_cast<long long>(tl::parameter_count(my_model::value)),
                loss);
    return loss > 0 ? 0 : 1;
}
