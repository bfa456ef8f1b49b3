// tinylm/data/sft_batch.hpp: SFT examples laid out in rows of a fixed length T, padded (one example per row) or
// packed (several examples per row, with document boundaries).
//
//   tl::data::sft_rows rows = tl::data::pack_examples(examples, 512, pad_id);
//   model.loss(rows.ids_view(first, B), rows.targets_view(first, B), rows.doc_start_view(first, B));
//
// Every row holds, per token: the id, the next-token target (-100 where nothing is trained) and doc_start, the
// index in the row of the first token of its document. The decoder uses doc_start so that attention never looks
// across documents and RoPE positions restart at each one (t - doc_start[t]); a packed row then gives the same
// loss and gradients as its documents run as separate rows. Targets are shifted inside each example, so the last
// token of a document never predicts the first token of the next. Padding is a document of its own, with targets
// -100.
#pragma once

#include <tinylm/core/tensor.hpp>
#include <tinylm/data/sft_labels.hpp>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace tl::data {

struct sft_rows {
    index_t time = 0;                   // T
    index_t rows = 0;                   // number of rows
    std::vector<std::int32_t> ids;      // (rows, T)
    std::vector<std::int32_t> targets;  // (rows, T) next-token targets, sft_ignore_index where not trained
    std::vector<index_t> doc_start;     // (rows, T) first token of each token's document
    std::vector<std::size_t> row_docs;  // examples (documents, padding excluded) per row
    std::size_t padding_tokens = 0;     // pad tokens over all rows
    std::size_t skipped_unlabelled = 0; // examples left out because they had no trained target

    // Rows [first, first + count) as (count, T) views, for decoder::loss(ids, targets, doc_start).
    cview<std::int32_t> ids_view(index_t first, index_t count) const { return slice(ids, first, count); }
    cview<std::int32_t> targets_view(index_t first, index_t count) const { return slice(targets, first, count); }
    cview<index_t> doc_start_view(index_t first, index_t count) const { return slice(doc_start, first, count); }
    // RoPE position of token t of row r: t - doc_start.
    index_t position(index_t r, index_t t) const { return t - doc_start[std::size_t(r * time + t)]; }
    // Fraction of the row slots that hold real (non-padding) tokens.
    double fill() const { return rows ? 1.0 - double(padding_tokens) / double(rows * time) : 0.0; }

private:
    template <class T>
    cview<T> slice(const std::vector<T>& v, index_t first, index_t count) const {
        check(first >= 0 && count > 0 && first + count <= rows, [&] {
            return "sft_rows: rows [" + std::to_string(first) + ", " + std::to_string(first + count) +
                   ") are outside the " + std::to_string(rows) + " rows";
        });
        return {v.data() + first * time, {count, time}};
    }
};

namespace detail {
inline void check_fits(const sft_example& ex, index_t time) {
    check(index_t(ex.ids.size()) <= time, [&] {
        return (ex.source.empty() ? std::string("sft example") : ex.source) + ": " + std::to_string(ex.ids.size()) +
               " tokens do not fit in rows of " + std::to_string(time) +
               " (tokenize with sft_label_options::max_length <= the row length)";
    });
    check(ex.labels.size() == ex.ids.size(), "sft example: ids and labels differ in length");
}
inline bool has_targets(const sft_example& ex) {
    return std::any_of(ex.labels.begin() + std::min<std::size_t>(1, ex.labels.size()), ex.labels.end(),
                       [](std::int32_t l) { return l >= 0; });
}
// Starts a row of T padding tokens (one document) and returns its index.
inline index_t add_padded_row(sft_rows& out, std::int32_t pad_id) {
    const index_t r = out.rows++;
    out.ids.resize(std::size_t(out.rows * out.time), pad_id);
    out.targets.resize(std::size_t(out.rows * out.time), sft_ignore_index);
    out.doc_start.resize(std::size_t(out.rows * out.time), 0);
    out.row_docs.push_back(0);
    return r;
}
// Writes `ex` into row r at column `at`, as a document, and makes the rest of the row a padding document.
inline void place(sft_rows& out, index_t r, index_t at, const sft_example& ex) {
    const std::vector<std::int32_t> targets = next_token_targets(ex.labels);
    const std::size_t base = std::size_t(r * out.time);
    for (std::size_t k = 0; k < ex.ids.size(); ++k) {
        out.ids[base + at + k] = ex.ids[k];
        out.targets[base + at + k] = targets[k];
        out.doc_start[base + at + k] = at;
    }
    const index_t end = at + index_t(ex.ids.size());
    for (index_t t = end; t < out.time; ++t)
        out.doc_start[base + t] = end;
    ++out.row_docs[std::size_t(r)];
}
} // namespace detail

// One example per row, padded to `time` with pad_id. Examples without any trained target are left out.
inline sft_rows pad_examples(const std::vector<sft_example>& examples, index_t time, std::int32_t pad_id) {
    check(time > 0, "pad_examples: the row length must be positive");
    sft_rows out;
    out.time = time;
    for (const sft_example& ex : examples) {
        detail::check_fits(ex, time);
        if (!detail::has_targets(ex)) {
            ++out.skipped_unlabelled;
            continue;
        }
        detail::place(out, detail::add_padded_row(out, pad_id), 0, ex);
        out.padding_tokens += std::size_t(time) - ex.ids.size();
    }
    return out;
}

// Several examples per row: first-fit decreasing (longest first, each into the first row with room), which keeps
// padding small; rows are in the order they were opened. Row order is not shuffled here. Examples without any trained
// target are left out.
inline sft_rows pack_examples(const std::vector<sft_example>& examples, index_t time, std::int32_t pad_id) {
    check(time > 0, "pack_examples: the row length must be positive");
    sft_rows out;
    out.time = time;
    std::vector<std::size_t> order;
    for (std::size_t i = 0; i < examples.size(); ++i) {
        detail::check_fits(examples[i], time);
        if (detail::has_targets(examples[i]))
            order.push_back(i);
        else
            ++out.skipped_unlabelled;
    }
    std::stable_sort(order.begin(), order.end(),
                     [&](std::size_t a, std::size_t b) { return examples[a].ids.size() > examples[b].ids.size(); });
    std::vector<index_t> used; // tokens used per row
    for (const std::size_t i : order) {
        const index_t n = index_t(examples[i].ids.size());
        std::size_t r = 0;
        while (r < used.size() && used[r] + n > time)
            ++r;
        if (r == used.size()) {
            detail::add_padded_row(out, pad_id);
            used.push_back(0);
        }
        detail::place(out, index_t(r), used[r], examples[i]);
        used[r] += n;
    }
    for (const index_t u : used)
        out.padding_tokens += std::size_t(time - u);
    return out;
}

} // namespace tl::data
