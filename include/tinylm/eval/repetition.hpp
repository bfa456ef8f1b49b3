// tinylm/eval/repetition.hpp: how a model's generations fail by repeating themselves or by copying the
// training corpus. Measured on words: maximal runs of letters and digits, lower-cased (tl::data::is_letter, so
// Cyrillic and every other script count), everything else separates words.
//
// For one text of N words and its n-grams (N − n + 1 of them when N ≥ n, else none):
//   distinct-n (n = 1, 2, 3)   distinct n-grams / n-grams (Li et al. 2016); 1 = nothing repeats;
//   repeated n-gram rate        n-grams equal to an earlier n-gram of the same text / n-grams, n = rep_n (4):
//                               seq-rep-n of Welleck et al. 2019; a text that loops tends to 1;
//   longest repeated span       the most words in a run that occurs at least twice in the text (the runs may
//                               overlap: "a b a b a" repeats "a b a"), and the words of the first such run;
//   copied n-gram rate          n-grams (n = copy_n, 8) that occur verbatim in the training corpus / n-grams:
//                               memorisation; needs an ngram_index of the corpus.
// Over several texts (a prompt set, a temperature): the same quantities pooled, i.e. distinct n-grams of all
// texts together / all n-grams (a model that answers every prompt alike scores low even when each answer
// varies), repeats and copies summed over texts / n-grams summed, the longest span of any text; and the
// per-text values for each text. A ratio whose denominator is 0 (a text shorter than n) is NaN and pooled sums
// skip it.
//
// ngram_index keeps one 64-bit hash per distinct corpus n-gram in a sorted vector, 8 bytes an n-gram: the 74 MB of
// Russian novels give 4.8 M distinct 8-grams, a 38 MB index (docs/evaluation.md). Two different n-grams share a
// hash with probability about 2^-64 per pair.
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/data/normalize.hpp>
#include <tinylm/data/utf8.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

namespace tl::eval {

// The words of a text, lower-cased.
inline std::vector<std::string> words_of(std::string_view text) {
    std::vector<std::string> out;
    std::string cur;
    std::size_t i = 0;
    while (i < text.size()) {
        const char32_t c = data::next_cp(text, i);
        if (data::is_letter(c) || data::is_digit(c)) {
            data::append_utf8(cur, data::to_lower(c));
        } else if (!cur.empty()) {
            out.push_back(std::move(cur));
            cur.clear();
        }
    }
    if (!cur.empty()) out.push_back(std::move(cur));
    return out;
}

namespace detail {

inline std::uint64_t mix(std::uint64_t x) { // splitmix64's finaliser
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

inline std::uint64_t word_hash(std::string_view w) {
    std::uint64_t h = 0xcbf29ce484222325ull;
    for (char c : w)
        h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
    return mix(h);
}

// The hash of each n-gram of a word-hash sequence, in order (none when it has fewer than n words).
inline std::vector<std::uint64_t> ngram_hashes(std::span<const std::uint64_t> w, std::size_t n) {
    std::vector<std::uint64_t> out;
    if (n == 0 || w.size() < n) return out;
    out.reserve(w.size() - n + 1);
    for (std::size_t i = 0; i + n <= w.size(); ++i) {
        std::uint64_t h = mix(n);
        for (std::size_t k = 0; k < n; ++k)
            h = mix(h ^ w[i + k]) + k;
        out.push_back(h);
    }
    return out;
}

inline std::vector<std::uint64_t> hashes_of(const std::vector<std::string>& words) {
    std::vector<std::uint64_t> h(words.size());
    for (std::size_t i = 0; i < words.size(); ++i)
        h[i] = word_hash(words[i]);
    return h;
}

inline double ratio(std::uint64_t num, std::uint64_t den) {
    return den == 0 ? std::numeric_limits<double>::quiet_NaN() : double(num) / double(den);
}

} // namespace detail

// The distinct n-grams of a corpus, as hashes. add() every text (n-grams never cross two texts), then
// finalize() before contains().
class ngram_index {
public:
    explicit ngram_index(std::size_t n) : n_(n) { check(n >= 1, "ngram_index: n must be at least 1"); }
    void add(std::string_view text) {
        check(!final_, "ngram_index: add after finalize");
        const auto h = detail::ngram_hashes(detail::hashes_of(words_of(text)), n_);
        hashes_.insert(hashes_.end(), h.begin(), h.end());
        total_ += h.size();
        if (hashes_.size() > 2 * compacted_ + (std::size_t(1) << 22)) compact(); // bounds memory on repeats
    }
    void finalize() {
        compact();
        hashes_.shrink_to_fit();
        final_ = true;
    }
    bool contains(std::uint64_t ngram_hash) const {
        check(final_, "ngram_index: contains before finalize");
        return std::binary_search(hashes_.begin(), hashes_.end(), ngram_hash);
    }
    // Adds each paragraph of a text (lines up to a blank line) as one text, so that n-grams cross lines of a
    // paragraph but never two paragraphs; returns the paragraphs added.
    std::size_t add_paragraphs(std::string_view text) {
        std::size_t added = 0, start = 0;
        auto flush = [&](std::size_t end) {
            if (end > start) add(text.substr(start, end - start)), ++added;
        };
        for (std::size_t at = 0; at < text.size();) {
            const std::size_t nl = text.find('\n', at);
            const std::size_t end = nl == std::string_view::npos ? text.size() : nl;
            const std::string_view line = text.substr(at, end - at);
            if (line.find_first_not_of(" \t\r") == std::string_view::npos) {
                flush(at);
                start = end + 1;
            }
            at = end + 1;
        }
        flush(text.size());
        return added;
    }
    std::size_t n() const { return n_; }
    std::size_t distinct() const { return hashes_.size(); } // after finalize
    std::uint64_t total() const { return total_; }          // n-grams added, repeats included
    std::size_t bytes() const { return hashes_.capacity() * sizeof(std::uint64_t); }

private:
    void compact() {
        std::sort(hashes_.begin(), hashes_.end());
        hashes_.erase(std::unique(hashes_.begin(), hashes_.end()), hashes_.end());
        compacted_ = hashes_.size();
    }
    std::size_t n_;
    std::vector<std::uint64_t> hashes_;
    std::size_t compacted_ = 0;
    std::uint64_t total_ = 0;
    bool final_ = false;
};

struct repetition_options {
    std::size_t rep_n = 4;  // n of the repeated n-gram rate
    std::size_t copy_n = 8; // n of the copied n-gram rate (must equal the index's n)
};

// Counts behind the ratios, so that texts pool by summing.
struct repetition_counts {
    std::array<std::uint64_t, 3> ngrams{}, distinct{}; // n = 1, 2, 3
    std::uint64_t rep_ngrams = 0, repeated = 0;
    std::uint64_t copy_ngrams = 0, copied = 0;
};

struct text_repetition {
    std::size_t words = 0;
    std::array<double, 3> distinct{}; // distinct-1, -2, -3
    double repeated_ngram_rate = 0;
    std::size_t longest_repeat = 0;  // words
    std::string longest_repeat_text; // those words, joined by spaces
    double copied_rate = 0;          // NaN without an index
    repetition_counts counts;
};

struct repetition_report {
    std::vector<text_repetition> texts;
    std::size_t words = 0;
    std::array<double, 3> distinct{}; // pooled over the texts
    double repeated_ngram_rate = 0, copied_rate = 0;
    std::size_t longest_repeat = 0; // the longest of any text
    std::size_t longest_repeat_text_index = 0;
};

// The longest run of words that occurs twice (overlap allowed) and where its first occurrence starts.
inline std::pair<std::size_t, std::size_t> longest_repeated_span(std::span<const std::uint64_t> w) {
    // prev[j] = length of the common run ending at words i-1 and j-1; O(N^2) time, O(N) memory: generations
    // are hundreds of words.
    const std::size_t n = w.size();
    std::vector<std::uint32_t> prev(n + 1, 0), cur(n + 1, 0);
    std::size_t best = 0, start = 0;
    for (std::size_t i = 1; i <= n; ++i) {
        for (std::size_t j = i + 1; j <= n; ++j) {
            cur[j] = w[i - 1] == w[j - 1] ? prev[j - 1] + 1 : 0;
            if (cur[j] > best) best = cur[j], start = i - cur[j];
        }
        std::swap(prev, cur);
        std::fill(cur.begin(), cur.end(), 0);
    }
    return {best, start};
}

inline text_repetition analyse_repetition(std::string_view text, const repetition_options& opt = {},
                                          const ngram_index* corpus = nullptr) {
    check(!corpus || corpus->n() == opt.copy_n, [&] {
        return "analyse_repetition: the corpus index holds " + std::to_string(corpus->n()) + "-grams but copy_n is " +
               std::to_string(opt.copy_n);
    });
    text_repetition r;
    const auto words = words_of(text);
    const auto w = detail::hashes_of(words);
    r.words = words.size();
    for (std::size_t n = 1; n <= 3; ++n) {
        auto h = detail::ngram_hashes(w, n);
        r.counts.ngrams[n - 1] = h.size();
        std::sort(h.begin(), h.end());
        r.counts.distinct[n - 1] = std::size_t(std::unique(h.begin(), h.end()) - h.begin());
        r.distinct[n - 1] = detail::ratio(r.counts.distinct[n - 1], r.counts.ngrams[n - 1]);
    }
    {
        const auto h = detail::ngram_hashes(w, opt.rep_n);
        std::unordered_set<std::uint64_t> seen;
        for (auto x : h)
            r.counts.repeated += !seen.insert(x).second;
        r.counts.rep_ngrams = h.size();
        r.repeated_ngram_rate = detail::ratio(r.counts.repeated, r.counts.rep_ngrams);
    }
    const auto [len, start] = longest_repeated_span(w);
    r.longest_repeat = len;
    for (std::size_t k = start; k < start + len; ++k)
        r.longest_repeat_text += (k > start ? " " : "") + words[k];
    r.copied_rate = std::numeric_limits<double>::quiet_NaN();
    if (corpus) {
        const auto h = detail::ngram_hashes(w, opt.copy_n);
        for (auto x : h)
            r.counts.copied += corpus->contains(x);
        r.counts.copy_ngrams = h.size();
        r.copied_rate = detail::ratio(r.counts.copied, r.counts.copy_ngrams);
    }
    return r;
}

inline repetition_report analyse_repetition(const std::vector<std::string>& texts, const repetition_options& opt = {},
                                            const ngram_index* corpus = nullptr) {
    repetition_report rep;
    std::array<std::unordered_set<std::uint64_t>, 3> pooled;
    repetition_counts sum;
    for (std::size_t t = 0; t < texts.size(); ++t) {
        rep.texts.push_back(analyse_repetition(texts[t], opt, corpus));
        const auto& r = rep.texts.back();
        const auto w = detail::hashes_of(words_of(texts[t]));
        for (std::size_t n = 1; n <= 3; ++n) {
            for (auto x : detail::ngram_hashes(w, n))
                pooled[n - 1].insert(x);
            sum.ngrams[n - 1] += r.counts.ngrams[n - 1];
        }
        sum.rep_ngrams += r.counts.rep_ngrams, sum.repeated += r.counts.repeated;
        sum.copy_ngrams += r.counts.copy_ngrams, sum.copied += r.counts.copied;
        rep.words += r.words;
        if (r.longest_repeat > rep.longest_repeat)
            rep.longest_repeat = r.longest_repeat, rep.longest_repeat_text_index = t;
    }
    for (std::size_t n = 0; n < 3; ++n)
        rep.distinct[n] = detail::ratio(pooled[n].size(), sum.ngrams[n]);
    rep.repeated_ngram_rate = detail::ratio(sum.repeated, sum.rep_ngrams);
    rep.copied_rate = corpus ? detail::ratio(sum.copied, sum.copy_ngrams) : std::numeric_limits<double>::quiet_NaN();
    return rep;
}

} // namespace tl::eval
