// tinylm/data/langid.hpp: a character n-gram language identifier, trained from sample text.
//
// Multinomial naive Bayes over hashed character n-grams (n = 1..max_n) of the lower-cased text, where every
// run of non-letters is one space and the text is padded with spaces, so that word starts and ends count.
// Each language is a table of 2^bits counters; a text scores sum(log P(gram | lang)) with add-one smoothing,
// and the best language wins. Training is deterministic and the model is small (a few MB).
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/core/rng.hpp>
#include <tinylm/data/normalize.hpp>
#include <tinylm/data/utf8.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

namespace tl::data {

struct langid_options {
    int max_n = 4;
    int bits = 18; // 2^bits hashed n-gram counters per language
};

struct langid_result {
    std::string lang;  // best language ("" when the text has no letters)
    double margin = 0; // best minus second-best log-probability, per n-gram
    std::size_t n_grams = 0;
};

class ngram_langid {
public:
    explicit ngram_langid(langid_options opt = {}) : opt_(opt) {
        check(opt.max_n >= 1 && opt.max_n <= 8 && opt.bits >= 8 && opt.bits <= 24,
              "langid: max_n must be in [1, 8] and bits in [8, 24]");
    }

    // Adds sample text of a language (any amount, any number of calls).
    void train(const std::string& lang, std::string_view text) {
        auto& l = language(lang);
        for_each_gram(text, [&](std::uint64_t h) {
            ++l.counts[h & mask()];
            ++l.total;
        });
        l.logp.clear();
    }

    const std::vector<std::string>& languages() const { return names_; }

    // Precomputes the log-probabilities; call after training and before classifying from several threads.
    void finalize() const { prepare(); }

    langid_result classify(std::string_view text) const {
        check(!langs_.empty(), "langid: classify called before any training text was added");
        prepare();
        std::vector<double> score(langs_.size(), 0.0);
        std::size_t n = 0;
        for_each_gram(text, [&](std::uint64_t h) {
            ++n;
            for (std::size_t k = 0; k < langs_.size(); ++k)
                score[k] += langs_[k].logp[h & mask()];
        });
        langid_result r;
        r.n_grams = n;
        if (n == 0) return r;
        std::size_t best = 0;
        for (std::size_t k = 1; k < score.size(); ++k)
            if (score[k] > score[best]) best = k;
        double second = -std::numeric_limits<double>::infinity();
        for (std::size_t k = 0; k < score.size(); ++k)
            if (k != best) second = std::max(second, score[k]);
        r.lang = names_[best];
        r.margin = langs_.size() > 1 ? (score[best] - second) / double(n) : 0.0;
        return r;
    }

private:
    struct lang_table {
        std::vector<std::uint32_t> counts;
        std::uint64_t total = 0;
        mutable std::vector<float> logp;
    };
    std::uint64_t mask() const { return (std::uint64_t(1) << opt_.bits) - 1; }
    lang_table& language(const std::string& name) {
        for (std::size_t k = 0; k < names_.size(); ++k)
            if (names_[k] == name) return langs_[k];
        names_.push_back(name);
        langs_.push_back({std::vector<std::uint32_t>(std::size_t(1) << opt_.bits, 0), 0, {}});
        return langs_.back();
    }
    void prepare() const {
        for (auto& l : langs_) {
            if (!l.logp.empty()) continue;
            l.logp.resize(l.counts.size());
            const double denom = std::log(double(l.total) + double(l.counts.size()));
            for (std::size_t i = 0; i < l.counts.size(); ++i)
                l.logp[i] = static_cast<float>(std::log(double(l.counts[i]) + 1.0) - denom);
        }
    }
    template <class F>
    void for_each_gram(std::string_view text, F&& f) const {
        // letters, lower-cased, with runs of non-letters as one space
        std::vector<char32_t> cps{' '};
        for (std::size_t i = 0; i < text.size();) {
            const char32_t c = next_cp(text, i);
            if (is_letter(c))
                cps.push_back(to_lower(c));
            else if (cps.back() != ' ')
                cps.push_back(' ');
        }
        if (cps.back() != ' ') cps.push_back(' ');
        if (cps.size() < 3) return; // no letters
        for (std::size_t i = 0; i < cps.size(); ++i) {
            std::uint64_t h = 0x9e3779b97f4a7c15ull;
            for (int n = 1; n <= opt_.max_n && i + n <= cps.size(); ++n) {
                h = mix64(h ^ (cps[i + n - 1] + (std::uint64_t(n) << 32)));
                if (n == 1 && cps[i] == ' ') continue; // a lone space says nothing
                f(h);
            }
        }
    }

    langid_options opt_;
    std::vector<std::string> names_;
    mutable std::vector<lang_table> langs_;
};

} // namespace tl::data
