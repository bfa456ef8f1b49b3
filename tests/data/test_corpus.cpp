// The bars on the real Russian novels corpus (label "slow"): the full clean + statistics pass (throughput, no
// Latin letters left), and planted exact and near duplicates all removed. Skipped (exit code 77) when the corpus is
// absent.
#include "../support/data.hpp"

#include <tinylm/core/rng.hpp>
#include <tinylm/data/dedup.hpp>
#include <tinylm/data/pipeline.hpp>
#include <tinylm/data/reader.hpp>
#include <tinylm/data/stats.hpp>

#include <boost/test/unit_test.hpp>

#include <chrono>
#include <map>
#include <set>
#include <unordered_set>

using namespace tl::data;

namespace {

bool has_latin_letter(std::string_view s) {
    for (std::size_t i = 0; i < s.size();) {
        const char32_t c = next_cp(s, i);
        if (is_letter(c) && std::string_view(script_of(c)) == "Latin") return true;
    }
    return false;
}

// Exact Jaccard similarity of the 5-shingle sets of two dedup keys.
double jaccard(std::string_view a, std::string_view b) {
    const auto shingles = [](std::string_view t) {
        const std::u32string k = dedup_key(t);
        std::unordered_set<std::u32string> s;
        for (std::size_t i = 0; i + 5 <= k.size(); ++i)
            s.insert(k.substr(i, 5));
        return s;
    };
    const auto sa = shingles(a), sb = shingles(b);
    std::size_t inter = 0;
    for (const auto& x : sa)
        inter += sb.count(x);
    return double(inter) / double(sa.size() + sb.size() - inter);
}

} // namespace

BOOST_AUTO_TEST_SUITE(corpus)

BOOST_AUTO_TEST_CASE(russian_novels_full_pass, tl_test::needs_data("russian_novels/corpus")) {
    const auto dir = tl_test::data_path("russian_novels/corpus");
    const auto t0 = std::chrono::steady_clock::now();
    text_reader in({dir});
    cleaner c;
    corpus_stats st;
    std::size_t latin = 0;
    std::string example;
    c.run(in, [&](const clean_paragraph& p) {
        st.add(p);
        for (auto s : p.sentences)
            if (has_latin_letter(s)) {
                if (latin++ == 0) example = std::string(s);
            }
    });
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const auto& rep = c.report();
    BOOST_TEST_MESSAGE("novels: " << rep.bytes_in / 1e6 << " MB, " << rep.files << " files in " << secs << " s ("
                                  << rep.bytes_in / 1e6 / secs << " MB/s); paragraphs " << rep.paragraphs_in << " -> "
                                  << rep.paragraphs_out << ", sentences " << rep.sentences_in << " -> "
                                  << rep.sentences_out);
    for (const auto& s : rep.stages)
        BOOST_TEST_MESSAGE("  " << s.name << ": seen " << s.seen << ", changed " << s.changed << ", removed "
                                << s.removed);
    BOOST_TEST(rep.files == 107u);
    BOOST_TEST(latin == 0u, "a kept sentence has Latin letters: " << example);
    BOOST_TEST(rep.repairs.control > 0u); // the file with stray control bytes
    BOOST_TEST(rep.stage("alphabet (russian)")->removed > 0u);
    BOOST_TEST(st.words > 5'000'000u);
    BOOST_TEST(secs < 60.0);
}

BOOST_AUTO_TEST_CASE(planted_duplicates_are_all_removed, tl_test::needs_data("russian_novels/corpus")) {
    const auto dir = tl_test::data_path("russian_novels/corpus");
    // 1. clean twelve novels; this is the base corpus, which dedups against itself first
    const auto files = list_files({dir});
    std::vector<std::filesystem::path> some;
    for (std::size_t i = 0; i < files.size(); i += 9)
        some.push_back(files[i]);
    text_reader in(some);
    cleaner base;
    std::vector<std::string> kept;
    base.run(in, [&](const clean_paragraph& p) { kept.push_back(p.text); });
    BOOST_TEST_REQUIRE(kept.size() > 5000u);

    // 2. plant copies of 300 random paragraphs of 300+ characters: 150 exact (case and punctuation changed),
    //    150 near (one or two words replaced, one deleted, punctuation changed)
    tl::counter_rng rng(2024);
    std::vector<std::size_t> long_ones;
    for (std::size_t i = 0; i < kept.size(); ++i)
        if (utf8_length(kept[i]) >= 300) long_ones.push_back(i);
    BOOST_TEST_REQUIRE(long_ones.size() > 1000u);
    std::vector<std::string> texts = kept;
    std::set<std::size_t> planted_exact, planted_near;
    double min_sim = 1, max_sim = 0;
    std::map<std::size_t, double> near_sim;
    std::map<std::size_t, std::size_t> near_src;
    std::set<std::size_t> used;
    for (int k = 0; k < 300; ++k) {
        std::size_t src;
        do
            src = long_ones[rng.below(long_ones.size())];
        while (!used.insert(src).second);
        std::string copy = kept[src];
        // shout the first word, turn commas into semicolons
        std::string shouted;
        for (std::size_t i = 0; i < copy.size();) {
            const char32_t ch = next_cp(copy, i);
            append_utf8(shouted, ch == ',' ? U';' : (shouted.size() < 20 ? char32_t(utf8proc_toupper(int(ch))) : ch));
        }
        copy = shouted;
        if (k % 2 == 1) {
            // near: split into words, replace two and delete one
            std::vector<std::string> w;
            std::size_t s = 0;
            for (std::size_t i = 0; i <= copy.size(); ++i)
                if (i == copy.size() || copy[i] == ' ') w.push_back(copy.substr(s, i - s)), s = i + 1;
            for (int e = 0; e < 2; ++e)
                w[rng.below(w.size())] = "заменённое";
            w.erase(w.begin() + std::ptrdiff_t(rng.below(w.size())));
            copy.clear();
            for (const auto& x : w)
                copy += (copy.empty() ? "" : " ") + x;
            near_sim[texts.size()] = jaccard(copy, kept[src]);
            near_src[texts.size()] = src;
            min_sim = std::min(min_sim, near_sim[texts.size()]);
            max_sim = std::max(max_sim, near_sim[texts.size()]);
        }
        // copies come after all originals, so the original is always the one kept
        texts.push_back(copy);
        (k % 2 == 0 ? planted_exact : planted_near).insert(texts.size() - 1);
    }
    BOOST_TEST_MESSAGE("planted 150 exact and 150 near copies; true Jaccard of the near copies " << min_sim << " to "
                                                                                                 << max_sim);

    // 3. clean base + planted: every planted copy goes, every base paragraph stays
    vector_reader all(texts);
    cleaner c;
    std::size_t kept_base = 0, kept_exact = 0, kept_near = 0;
    c.run(all, [&](const clean_paragraph& p) {
        if (planted_exact.count(p.doc))
            ++kept_exact;
        else if (planted_near.count(p.doc)) {
            ++kept_near;
            BOOST_TEST_MESSAGE("missed near copy (true Jaccard " << near_sim[p.doc] << "): " << p.text);
        } else
            ++kept_base;
    });
    BOOST_TEST_MESSAGE("kept " << kept_base << " of " << kept.size() << " base paragraphs, " << kept_exact
                               << " of 150 exact copies, " << kept_near << " of 150 near copies; exact_dedup removed "
                               << c.report().stage("exact_dedup")->removed << ", near_dedup removed "
                               << c.report().stage("near_dedup")->removed);
    BOOST_TEST(kept_exact == 0u);
    BOOST_TEST(kept_near == 0u);
    BOOST_TEST(kept_base == kept.size());
}

BOOST_AUTO_TEST_SUITE_END()
