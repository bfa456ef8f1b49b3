// eval/repetition.hpp on the real pretraining corpus (label slow): the 8-gram index of the 72 MB of Russian novels
// fits in memory, a passage of a novel counts as copied and the same words in another order do not.
#include <tinylm/data/reader.hpp>
#include <tinylm/eval/repetition.hpp>

#include "../support/data.hpp"

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>

BOOST_AUTO_TEST_CASE(novels_8gram_index, tl_test::needs_data("russian_novels/corpus")) {
    const auto t0 = std::chrono::steady_clock::now();
    tl::eval::ngram_index idx(8);
    tl::data::text_reader r({tl_test::data_path("russian_novels/corpus")});
    tl::data::record rec;
    std::string passage; // a long paragraph of the corpus, kept to check below
    std::uint64_t bytes = 0;
    while (r.next(rec)) {
        bytes += rec.text.size();
        if (passage.empty() && tl::eval::words_of(rec.text).size() >= 40) passage = rec.text;
        idx.add(rec.text);
    }
    idx.finalize();
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("novels: %.1f MB, %llu 8-grams, %zu distinct, index %.1f MB, %.1f s\n", double(bytes) / 1e6,
                (unsigned long long)idx.total(), idx.distinct(), double(idx.bytes()) / 1e6, secs);
    BOOST_TEST(idx.distinct() > 4'000'000u);
    BOOST_TEST(idx.bytes() < 200'000'000u);
    const tl::eval::repetition_options opt{.rep_n = 4, .copy_n = 8};
    BOOST_TEST(tl::eval::analyse_repetition(passage, opt, &idx).copied_rate == 1.0);
    auto words = tl::eval::words_of(passage);
    std::reverse(words.begin(), words.end());
    std::string reversed;
    for (const auto& w : words)
        reversed += w + " ";
    const double rev = tl::eval::analyse_repetition(reversed, opt, &idx).copied_rate;
    std::printf("a %zu-word passage: copied 1; reversed: copied %.3f\n", words.size(), rev);
    BOOST_TEST(rev < 0.1);
}
