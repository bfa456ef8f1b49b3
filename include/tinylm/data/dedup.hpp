// tinylm/data/dedup.hpp: exact and near-duplicate detection (MinHash with locality-sensitive hashing).
//
// Both work on a key: the text lower-cased, with every run of characters other than letters and digits
// turned into one space, so that punctuation, case and spacing do not hide a duplicate.
// - Exact: a 64-bit hash of the key; a second text with the same hash is a duplicate.
// - Near: the key's character shingles (n-grams of `shingle` code points) are MinHashed into bands × rows
//   values; texts sharing all rows of any band are candidates, and a candidate whose estimated Jaccard
//   similarity (fraction of equal MinHash values) reaches `threshold` is a near duplicate. The estimate from
//   k = bands × rows values has a standard deviation of sqrt(J(1 − J)/k), 0.036 at J = 0.8 with the default
//   k = 120, so the default threshold 0.7 sits three deviations below 0.8: pairs of similarity 0.8 and above
//   are removed with probability above 99.8%, pairs of 0.7 about half the time. A pair becomes a candidate with
//   probability 1 − (1 − J^rows)^bands: 0.9997 at J = 0.7 and 1 − 10^-7 at 0.8 with 30 bands × 4 rows.
//
// `prepare` is pure and may run in parallel; `check_and_add` is sequential (first occurrence wins). Memory
// grows with the texts kept: 16-bit copies of each signature (2 × bands × rows bytes) and bands table slots.
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/core/rng.hpp>
#include <tinylm/data/normalize.hpp>
#include <tinylm/data/utf8.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace tl::data {

struct dedup_options {
    bool exact = true;
    std::size_t exact_min_chars = 32; // shorter keys ("— Да.", a refrain line) are never duplicates
    bool near = true;
    double threshold = 0.7;          // estimated Jaccard similarity of shingle sets
    std::size_t near_min_chars = 64; // shorter keys are not checked for near duplicates
    int shingle = 5;                 // code points per shingle
    int bands = 30;
    int rows = 4;
    std::uint64_t seed = 0x5eed;
};

// Lower-cased letters and digits, runs of anything else as one space, no leading or trailing space.
inline std::u32string dedup_key(std::string_view text) {
    std::u32string k;
    k.reserve(text.size());
    for (std::size_t i = 0; i < text.size();) {
        const char32_t c = next_cp(text, i);
        if (is_letter(c) || is_digit(c))
            k.push_back(to_lower(c));
        else if (!k.empty() && k.back() != ' ')
            k.push_back(' ');
    }
    if (!k.empty() && k.back() == ' ') k.pop_back();
    return k;
}

class deduplicator {
public:
    enum class verdict { keep, exact_duplicate, near_duplicate };
    struct prepared {
        bool exact_eligible = false, near_eligible = false;
        std::uint64_t exact_hash = 0;
        std::vector<std::uint32_t> signature; // bands × rows
    };
    struct result {
        verdict what = verdict::keep;
        std::uint64_t other = 0; // id of the earlier text it duplicates
        double similarity = 1;
    };

    explicit deduplicator(dedup_options opt = {}) : opt_(opt) {
        check(opt.bands >= 1 && opt.rows >= 1 && opt.shingle >= 1 && opt.threshold > 0 && opt.threshold <= 1,
              "dedup: bands, rows and shingle must be positive and threshold in (0, 1]");
        counter_rng rng(opt.seed, 77);
        const int k = opt.bands * opt.rows;
        for (int j = 0; j < k; ++j) {
            mul_.push_back(rng.next_u64() | 1);
            add_.push_back(rng.next_u64());
        }
        slots_.assign(1 << 16, slot{});
    }
    const dedup_options& options() const { return opt_; }

    prepared prepare(std::string_view text) const {
        prepared p;
        const std::u32string key = dedup_key(text);
        p.exact_eligible = opt_.exact && key.size() >= opt_.exact_min_chars;
        p.near_eligible = opt_.near && key.size() >= opt_.near_min_chars;
        if (p.exact_eligible) {
            std::uint64_t h = 0xcbf29ce484222325ull;
            for (char32_t c : key)
                h = (h ^ c) * 0x100000001b3ull;
            p.exact_hash = mix64(h);
        }
        if (p.near_eligible) {
            const std::size_t k = mul_.size();
            std::vector<std::uint64_t> mins(k, ~std::uint64_t(0));
            const std::size_t n = std::size_t(opt_.shingle);
            for (std::size_t i = 0; i + n <= key.size(); ++i) {
                std::uint64_t h = 0x9e3779b97f4a7c15ull;
                for (std::size_t m = 0; m < n; ++m)
                    h = (h ^ key[i + m]) * 0x100000001b3ull;
                h = mix64(h);
                for (std::size_t j = 0; j < k; ++j) {
                    // (h xor s) · m: one multiply like a linear hash, but without the correlated orderings
                    // that h · m + s gives for some seeds
                    const std::uint64_t v = (h ^ add_[j]) * mul_[j];
                    mins[j] = v < mins[j] ? v : mins[j];
                }
            }
            p.signature.resize(k);
            for (std::size_t j = 0; j < k; ++j)
                p.signature[j] = static_cast<std::uint32_t>(mins[j] >> 32);
        }
        return p;
    }

    // Checks a prepared text against everything kept so far; remembers it when it is kept.
    result check_and_add(const prepared& p, std::uint64_t id) {
        result r;
        if (p.exact_eligible) {
            const auto [it, inserted] = exact_.emplace(p.exact_hash, id);
            if (!inserted) {
                r.what = verdict::exact_duplicate;
                r.other = it->second;
                return r;
            }
        }
        if (!p.near_eligible) return r;
        const std::size_t k = p.signature.size();
        std::vector<std::uint64_t> band_keys(std::size_t(opt_.bands));
        for (int b = 0; b < opt_.bands; ++b) {
            std::uint64_t h = mix64(std::uint64_t(b) + 1);
            for (int q = 0; q < opt_.rows; ++q)
                h = mix64(h ^ p.signature[std::size_t(b * opt_.rows + q)]);
            band_keys[std::size_t(b)] = h;
        }
        double best = 0;
        std::uint32_t best_item = 0;
        for (std::uint64_t key : band_keys) {
            const std::uint32_t tag = fingerprint(key);
            for (std::size_t s = home(tag); slots_[s].tag != 0; s = (s + 1) & (slots_.size() - 1)) {
                if (slots_[s].tag != tag) continue;
                const std::uint32_t item = slots_[s].item;
                const std::uint16_t* sig = &sigs_[std::size_t(item) * k];
                std::size_t same = 0;
                for (std::size_t j = 0; j < k; ++j)
                    same += sig[j] == static_cast<std::uint16_t>(p.signature[j]);
                const double sim = double(same) / double(k);
                if (sim > best) best = sim, best_item = item;
            }
            if (best >= opt_.threshold) break;
        }
        if (best >= opt_.threshold) {
            r.what = verdict::near_duplicate;
            r.other = ids_[best_item];
            r.similarity = best;
            if (p.exact_eligible) exact_.erase(p.exact_hash);
            return r;
        }
        // keep: remember the signature and its bands
        const auto item = static_cast<std::uint32_t>(ids_.size());
        ids_.push_back(id);
        for (std::size_t j = 0; j < k; ++j)
            sigs_.push_back(static_cast<std::uint16_t>(p.signature[j]));
        for (std::uint64_t key : band_keys)
            insert(key, item);
        return r;
    }

    std::size_t near_items() const { return ids_.size(); }
    std::size_t exact_items() const { return exact_.size(); }
    std::size_t memory_bytes() const {
        return sigs_.capacity() * 2 + ids_.capacity() * 8 + slots_.capacity() * sizeof(slot) + exact_.size() * 40;
    }

private:
    // Band table: open addressing on a 32-bit tag of each band key (0 marks an empty slot); the slot index is a
    // hash of the tag, so the table can grow without the full keys. A tag collision only costs a comparison.
    struct slot {
        std::uint32_t tag = 0;
        std::uint32_t item = 0;
    };
    static std::uint32_t fingerprint(std::uint64_t key) { return static_cast<std::uint32_t>(key >> 32) | 1u; }
    std::size_t home(std::uint32_t tag) const { return mix64(tag) & (slots_.size() - 1); }
    void insert(std::uint64_t key, std::uint32_t item) { insert_tag(fingerprint(key), item); }
    void insert_tag(std::uint32_t tag, std::uint32_t item) {
        if (2 * (used_ + 1) > slots_.size()) {
            std::vector<slot> old(slots_.size() * 2);
            old.swap(slots_);
            used_ = 0;
            for (const auto& o : old)
                if (o.tag != 0) insert_tag(o.tag, o.item);
        }
        std::size_t s = home(tag);
        while (slots_[s].tag != 0)
            s = (s + 1) & (slots_.size() - 1);
        slots_[s] = {tag, item};
        ++used_;
    }

    dedup_options opt_;
    std::vector<std::uint64_t> mul_, add_;
    std::unordered_map<std::uint64_t, std::uint64_t> exact_;
    std::vector<std::uint64_t> ids_;
    std::vector<std::uint16_t> sigs_;
    std::vector<slot> slots_;
    std::size_t used_ = 0;
};

} // namespace tl::data
