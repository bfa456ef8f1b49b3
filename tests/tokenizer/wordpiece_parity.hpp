// Compares tinylm's WordPiece tokenizer with a reference made by
// tests/reference/tokenizer/make_wordpiece_reference.py (Hugging Face `tokenizers`): plain ids, decode,
// truncation, pairs and padded batches. Shared by test_wordpiece.cpp and the torch-labelled live check.
#pragma once

#include <tinylm/tokenizer/wordpiece_tokenizer.hpp>

#include <nlohmann/json.hpp>

#include <cstddef>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tl::test {

struct parity_count {
    int checked = 0, failed = 0;
};

// Counts the mismatches and describes the first few on `log`.
inline parity_count compare_wordpiece(const tl::wordpiece_tokenizer& tok, const nlohmann::json& ref,
                                      std::ostream& log) {
    parity_count n;
    auto expect = [&](bool ok, const auto& what) {
        ++n.checked;
        if (!ok && ++n.failed <= 10) log << "differs from Hugging Face: " << what << "\n";
    };
    using ids_t = std::vector<tl::token_t>;
    const auto texts = ref["texts"].get<std::vector<std::string>>();
    for (std::size_t i = 0; i < texts.size(); ++i) {
        const ids_t ids = tok.encode(texts[i]);
        expect(ids == ref["ids"][i].get<ids_t>(), "ids of text " + std::to_string(i));
        const ids_t with_special = tok.encode(texts[i], true);
        expect(tok.decode(with_special) == ref["decode"][i].get<std::string>(), "decode of text " + std::to_string(i));
        if (i < ref["decode_keep_special"].size())
            expect(tok.decode(with_special, false) == ref["decode_keep_special"][i].get<std::string>(),
                   "decode (special tokens kept) of text " + std::to_string(i));
    }
    for (const auto& t : ref["truncated"]) {
        const auto i = t["text"].get<std::size_t>();
        const auto e = tok.encode_full(texts[i], nullptr, true, t["max_length"].get<std::size_t>());
        expect(e.ids == t["ids"].get<ids_t>() && e.truncated == t["cut"].get<bool>(),
               "text " + std::to_string(i) + " truncated to " + t["max_length"].dump());
    }
    for (const auto& p : ref["pairs"]) {
        const std::string_view b = texts[p["b"].get<std::size_t>()];
        const auto e = tok.encode_full(texts[p["a"].get<std::size_t>()], &b, true, p["max_length"].get<std::size_t>());
        expect(e.ids == p["ids"].get<ids_t>() && e.type_ids == p["type_ids"].get<ids_t>() &&
                   e.truncated == p["cut"].get<bool>(),
               "pair " + p["a"].dump() + ", " + p["b"].dump() + " with max_length " + p["max_length"].dump());
    }
    for (std::size_t k = 0; k < ref["batches"].size(); ++k) {
        const auto& b = ref["batches"][k];
        const auto rows = b["rows"].get<std::vector<std::size_t>>();
        const auto max_length = b["max_length"].get<std::size_t>();
        tl::wordpiece_batch got;
        if (b["pairs"].is_null()) {
            std::vector<std::string_view> v;
            for (std::size_t r : rows)
                v.push_back(texts[r]);
            got = tok.encode_batch(std::span<const std::string_view>(v), max_length);
        } else {
            const auto second = b["pairs"].get<std::vector<std::size_t>>();
            std::vector<std::pair<std::string_view, std::string_view>> v;
            for (std::size_t r = 0; r < rows.size(); ++r)
                v.emplace_back(texts[rows[r]], texts[second[r]]);
            got = tok.encode_batch(std::span<const std::pair<std::string_view, std::string_view>>(v), max_length);
        }
        bool ok = got.batch == rows.size() && b["mask_is_prefix"].get<bool>() &&
                  got.n_truncated == b["cut"].get<std::size_t>();
        for (std::size_t r = 0; ok && r < rows.size(); ++r) {
            const auto want_ids = b["ids"][r].get<ids_t>();
            ok = got.time == want_ids.size() &&
                 ids_t(got.ids.begin() + std::ptrdiff_t(r * got.time),
                       got.ids.begin() + std::ptrdiff_t((r + 1) * got.time)) == want_ids &&
                 ids_t(got.type_ids.begin() + std::ptrdiff_t(r * got.time),
                       got.type_ids.begin() + std::ptrdiff_t((r + 1) * got.time)) == b["type_ids"][r].get<ids_t>() &&
                 got.lengths[r] == b["lengths"][r].get<tl::index_t>();
        }
        expect(ok, "batch " + std::to_string(k) + " (" + std::to_string(rows.size()) + " rows, max_length " +
                       std::to_string(max_length) + ")");
    }
    return n;
}

} // namespace tl::test
