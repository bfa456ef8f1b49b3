// Learning: the tiny byte-level model memorises a short text (loss < 0.1) with AdamW, warmup + cosine and
// clipping, the path every recipe takes.
#include <tinylm/model/decoder.hpp>
#include <tinylm/model/presets.hpp>
#include <tinylm/optim/adamw.hpp>
#include <tinylm/optim/clip.hpp>
#include <tinylm/optim/schedule.hpp>

#include <boost/test/unit_test.hpp>

#include <string>

using namespace tl;

namespace {
// About 1.2 KB: the opening of Pushkin's "The Captain's Daughter" (public domain), in UTF-8 bytes.
const std::string text =
    "Отец мой Андрей Петрович Гринёв в молодости своей служил при графе Минихе и вышел в отставку премьер-майором "
    "в 17.. году. С тех пор жил он в своей Симбирской деревне, где и женился на девице Авдотье Васильевне Ю., "
    "дочери бедного тамошнего дворянина. Нас было девять человек детей. Все мои братья и сестры умерли во "
    "младенчестве. Матушка была ещё мною брюхата, как уже я был записан в Семёновский полк сержантом.";
} // namespace

BOOST_AUTO_TEST_SUITE(training)

BOOST_AUTO_TEST_CASE(tiny_model_overfits_a_short_text) {
    using model_t = decoder<presets::tiny>;
    model_t model(42);
    adamw opt(model, {.weight_decay = 0.0});
    const index_t B = 8, T = presets::tiny::value.max_seq_len;
    const lr_schedule schedule{.peak_lr = 3e-3, .min_lr = 3e-4, .warmup_steps = 20, .total_steps = 600};
    BOOST_TEST_REQUIRE(index_t(text.size()) > T + 1);
    std::vector<token_t> ids(B * T), targets(B * T);
    counter_rng rng(7);
    float loss = 0;
    long long step = 0;
    for (; step < schedule.total_steps; ++step) {
        for (index_t b = 0; b < B; ++b) {
            const index_t start = index_t(rng.below(text.size() - T - 1));
            for (index_t t = 0; t < T; ++t) {
                ids[b * T + t] = static_cast<unsigned char>(text[start + t]);
                targets[b * T + t] = static_cast<unsigned char>(text[start + t + 1]);
            }
        }
        model.zero_grad();
        loss = model.loss(cview<token_t>{ids.data(), {B, T}}, cview<token_t>{targets.data(), {B, T}});
        model.backward();
        clip_grad_norm(model.parameter_entries(), 1.0);
        opt.step(schedule.lr_at(step));
        if (step % 100 == 0) BOOST_TEST_MESSAGE("step " << step << " loss " << loss);
        if (loss < 0.1f) break;
    }
    BOOST_TEST_MESSAGE("final: step " << step << " loss " << loss);
    BOOST_TEST(loss < 0.1f);
}

BOOST_AUTO_TEST_SUITE_END()
