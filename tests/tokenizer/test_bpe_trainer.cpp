// The BPE trainer: known merges on a toy corpus, the same tokenizer.json byte for byte for 1 and 2 threads,
// the committed trained tokenizers reproduced exactly, and their ids identical to Hugging Face's (which loaded
// the tokenizer.json tinylm wrote; expected_trained_*.json from make_reference.py).
#include "tokenizer_test_util.hpp"

#include <tinylm/tokenizer/bpe_trainer.hpp>
#include <tinylm/tokenizer/hf_json.hpp>

#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace {

std::string training_text() {
    std::string all;
    for (const auto& t : tl::test::test_texts())
        all += t.text + "\n";
    return all;
}

tl::bpe_trainer_options committed_options(tl::bpe_style style, int threads) {
    tl::bpe_trainer_options opt;
    opt.style = style;
    opt.n_threads = threads;
    if (style == tl::bpe_style::byte_level) {
        opt.vocab_size = 500;
        opt.special_tokens = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
    } else {
        opt.vocab_size = 700;
        opt.limit_alphabet = 120; // the rarer characters go through <0xNN>
    }
    return opt;
}

std::string committed_name(tl::bpe_style style) {
    return style == tl::bpe_style::byte_level ? "trained_byte_level.json" : "trained_byte_fallback.json";
}

tl::tokenizer train(const std::string& text, tl::bpe_trainer_options opt) {
    tl::bpe_trainer trainer(std::move(opt));
    trainer.feed(text);
    return trainer.train();
}

} // namespace

BOOST_AUTO_TEST_SUITE(bpe_trainer)

BOOST_AUTO_TEST_CASE(toy_corpus_known_merges) {
    tl::bpe_trainer_options opt;
    opt.vocab_size = 1 + 256 + 3;
    opt.pattern = tl::split_pattern::gpt2;
    opt.n_threads = 1;
    const tl::tokenizer tok = train("hug hug hug pug pun bun hugs", opt);
    // Word counts: "hug" 1, " hug" 2, " pug" 1, " pun" 1, " bun" 1, " hugs" 1.
    // Pairs: "ug" 5, " h" 3, "hu" 4 ... → first "u"+"g", then " "+"h"? (" h" 3 < "hug" 4: "h"+"ug" 4).
    const auto& m = tok.model;
    BOOST_REQUIRE_EQUAL(m.merges.size(), 3u);
    auto spelled = [&](std::size_t r) {
        return m.tokens[static_cast<std::size_t>(m.merges[r].first)] + "+" +
               m.tokens[static_cast<std::size_t>(m.merges[r].second)];
    };
    BOOST_TEST(spelled(0) == "u+g");
    BOOST_TEST(spelled(1) == "h+ug");
    BOOST_TEST(spelled(2) == " +hug");
    BOOST_TEST(tok.encode(" hug") == (std::vector<tl::token_t>{259}));
}

BOOST_AUTO_TEST_CASE(same_json_for_one_and_two_threads) {
    const std::string text = training_text();
    for (auto style : {tl::bpe_style::byte_level, tl::bpe_style::byte_fallback}) {
        const std::string one = tl::to_tokenizer_json(train(text, committed_options(style, 1)));
        const std::string two = tl::to_tokenizer_json(train(text, committed_options(style, 2)));
        BOOST_TEST((one == two), committed_name(style) << ": 1 and 2 threads differ");
        auto every_merge_parallel = committed_options(style, 3);
        every_merge_parallel.parallel_merge_min_words = 1;
        BOOST_TEST((one == tl::to_tokenizer_json(train(text, every_merge_parallel))),
                   committed_name(style) << ": parallel merges differ");
        const std::string path = tl::test::reference_dir() + "/" + committed_name(style);
        if (std::getenv("TINYLM_UPDATE_REFERENCE")) {
            std::ofstream(path, std::ios::binary) << one;
            BOOST_TEST_MESSAGE("wrote " << path);
        }
        BOOST_TEST((one == tl::test::read_file(path)), committed_name(style)
                                                           << ": training no longer reproduces the committed file");
    }
}

BOOST_AUTO_TEST_CASE(trained_ids_match_hf) {
    for (auto style : {tl::bpe_style::byte_level, tl::bpe_style::byte_fallback}) {
        const std::string name = committed_name(style);
        const tl::tokenizer tok = tl::load_tokenizer_json(tl::test::reference_dir() + "/" + name);
        const auto expected = tl::test::read_json(tl::test::reference_dir() + "/expected_" + name);
        for (const auto& t : tl::test::test_texts()) {
            const auto ids = tok.encode(t.text);
            BOOST_TEST(ids == expected["ids"][t.name].get<std::vector<tl::token_t>>(),
                       name << " / " << t.name << ": ids differ from Hugging Face");
            const bool lossy = style == tl::bpe_style::byte_fallback &&
                               (t.name.starts_with("special_tokens") || t.name == "llama_metaspace_literal");
            if (!lossy)
                BOOST_TEST(tok.decode(ids) == tl::unicode::nfc(t.text), name << " / " << t.name << ": round trip");
        }
    }
}

BOOST_AUTO_TEST_CASE(deterministic_on_real_corpus, tl_test::needs_data("russian_novels/corpus")) {
    const auto dir = tl_test::data_path("russian_novels/corpus");
    std::vector<std::filesystem::path> files;
    for (const auto& e : std::filesystem::directory_iterator(dir))
        files.push_back(e.path());
    std::sort(files.begin(), files.end());
    std::string text;
    for (const auto& f : files) {
        text += tl::test::read_file(f.string());
        if (text.size() > (3u << 20)) break;
    }
    for (auto style : {tl::bpe_style::byte_level, tl::bpe_style::byte_fallback}) {
        tl::bpe_trainer_options opt;
        opt.style = style;
        opt.vocab_size = 3000;
        opt.n_threads = 1;
        const tl::tokenizer a = train(text, opt);
        opt.n_threads = 2;
        const tl::tokenizer b = train(text, opt);
        BOOST_TEST((tl::to_tokenizer_json(a) == tl::to_tokenizer_json(b)), "1 and 2 threads differ");
        BOOST_TEST(a.vocab_size() == 3000u);
        const std::string sample = text.substr(0, 200000);
        const std::string cut = sample.substr(0, sample.rfind('\n') + 1);
        const auto ids = a.encode(cut);
        BOOST_TEST(a.decode(ids) == tl::unicode::nfc(cut));
        BOOST_TEST((a.encode_parallel(cut, 2) == ids), "encode_parallel differs from encode");
        BOOST_TEST_MESSAGE((style == tl::bpe_style::byte_level ? "byte-level" : "byte-fallback")
                           << " 3000: " << static_cast<double>(cut.size()) / static_cast<double>(ids.size())
                           << " bytes per token on " << cut.size() << " bytes");
    }
}

BOOST_AUTO_TEST_SUITE_END()
