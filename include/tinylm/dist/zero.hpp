// tinylm/dist/zero.hpp: ZeRO stage 1 (Rajbhandari et al. 2020): the optimizer state sharded over the ranks.
//
// The entries that train, in walk order, are laid end to end as one flat vector of `total` floats; rank r owns the
// elements [r * chunk, (r + 1) * chunk) with chunk = ceil(total / N) (the last rank's part is shorter; buffers are
// padded to N * chunk). shard_entries() are parameter entries over the rank's slices of the model's own values
// and gradients (a slice of an entry: its name, kind and group, one dimension), so an unchanged AdamW over them
// keeps moments for 1/N of the parameters. Each step:
//   reduce_scatter_gradients()   the gradients summed over ranks, of which this rank receives its slices
//   global_grad_norm()           the norm of the whole summed gradient (squares summed over the shards)
//   scale_gradients(s)           clipping, on the shard
//   (the optimizer steps the shard entries)
//   all_gather_values()          every rank's updated slices to every rank: the replicas stay identical
// gather_state/scatter_state move the moments between the shards and a full optimizer (a checkpoint holds the
// full state in the usual names, so resuming with another N re-splits it).
//
// Row masks (vocabulary growth trains only some rows of the embedding and the head; model/vocab_growth.hpp): the
// parts need not end at row boundaries, so a rank's slice of an entry that can have a mask (the embedding and
// head groups) is cut at row boundaries into pieces: a partial first row (1, k), whole rows (r, cols), a partial
// last row (1, k'). Each piece carries the mask of its rows, copied from the entry's live mask at every
// reduce_scatter_gradients (so a mask changed between steps is followed), and AdamW and the norm then skip the
// masked rows of each piece exactly as they skip them in the whole entry: frozen rows keep their values and moments
// bit for bit, and the step is one process's. The pieces of one entry are named "<name>", "<name>#1", ... (the
// names of their optimizer state, local to the partition).
#pragma once

#include <tinylm/dist/communicator.hpp>
#include <tinylm/optim/clip.hpp>
#include <tinylm/optim/optimizer.hpp>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

namespace tl::dist {

class zero_partition {
public:
    zero_partition(const communicator& comm, const std::vector<parameter_entry>& entries)
        : rank_(comm.rank()), size_(comm.size()) {
        for (std::size_t i = 0; i < entries.size(); ++i)
            if (trains(entries[i])) {
                trained_.push_back({i, total_});
                total_ += std::size_t(entries[i].value.numel());
            }
        chunk_ = (total_ + std::size_t(size_) - 1) / std::size_t(size_);
        const std::size_t begin = std::min(total_, std::size_t(rank_) * chunk_), end = std::min(total_, begin + chunk_);
        for (const placed& p : trained_) {
            const parameter_entry& e = entries[p.entry];
            const std::size_t n = std::size_t(e.value.numel());
            const std::size_t from = std::max(begin, p.flat), to = std::min(end, p.flat + n);
            if (from >= to) continue;
            if (can_have_row_mask(e))
                add_row_pieces(e, p.entry, from - p.flat, to - p.flat, from - begin);
            else
                add_piece(e, p.entry, from - p.flat, to - from, from - begin, shape{index_t(to - from)}, 0, 0);
        }
        masks_.resize(mine_.size());
        for (std::size_t k = 0; k < mine_.size(); ++k)
            if (mine_[k].rows > 0) masks_[k].resize(std::size_t(mine_[k].rows));
        refresh_row_masks(entries);
        flat_.resize(chunk_ * std::size_t(size_));
        chunk_buffer_.resize(chunk_);
    }
    // The shard entries point at the partition's own row masks: a copy would share them.
    zero_partition(const zero_partition&) = delete;
    zero_partition& operator=(const zero_partition&) = delete;

    // The rank's slices as entries for an optimizer (they must outlive it: keep the partition).
    const std::vector<parameter_entry>& shard_entries() const { return shard_; }
    // Whether `entries` still trains exactly what the partition was made for (freezing changes it).
    bool fits(const std::vector<parameter_entry>& entries) const {
        std::size_t k = 0;
        for (std::size_t i = 0; i < entries.size(); ++i)
            if (trains(entries[i]) && (k >= trained_.size() || trained_[k++].entry != i)) return false;
        return k == trained_.size();
    }
    std::size_t total() const { return total_; }
    std::size_t owned() const { return shard_.empty() ? 0 : total_owned(); }

    // The gradients summed over the ranks, this rank's slices into its shard entries; the pieces' row masks
    // follow the entries' masks of now.
    void reduce_scatter_gradients(communicator& comm, const std::vector<parameter_entry>& entries) {
        refresh_row_masks(entries);
        for (const placed& p : trained_) {
            const auto& g = entries[p.entry].grad;
            std::copy(g.data, g.data + g.numel(), flat_.begin() + std::ptrdiff_t(p.flat));
        }
        std::fill(flat_.begin() + std::ptrdiff_t(total_), flat_.end(), 0.0f);
        comm.reduce_scatter_sum(flat_, chunk_buffer_);
        for (std::size_t k = 0; k < mine_.size(); ++k)
            std::copy_n(chunk_buffer_.begin() + std::ptrdiff_t(mine_[k].chunk_offset), mine_[k].count,
                        shard_[k].grad.data);
    }

    // The norm of the whole summed gradient, masked rows left out (as clip_grad_norm leaves them out).
    double global_grad_norm(communicator& comm) const {
        double squares = 0;
        for (const parameter_entry& s : shard_)
            tl::detail::for_each_trained_run(s, [&](index_t first, index_t count) {
                for (index_t j = first; j < first + count; ++j)
                    squares += double(s.grad.data[j]) * double(s.grad.data[j]);
            });
        return std::sqrt(comm.sum(squares));
    }

    void scale_gradients(float scale) {
        for (const parameter_entry& s : shard_)
            tl::detail::for_each_trained_run(s, [&](index_t first, index_t count) {
                for (index_t j = first; j < first + count; ++j)
                    s.grad.data[j] *= scale;
            });
    }

    void all_gather_values(communicator& comm, const std::vector<parameter_entry>& entries) {
        gather([&](std::size_t k) { return shard_[k].value.data; }, comm);
        for (const placed& p : trained_) {
            const auto& v = entries[p.entry].value;
            std::copy_n(flat_.begin() + std::ptrdiff_t(p.flat), v.numel(), v.data);
        }
    }

    // Full optimizer state from the shards' (collective): `full` gets every trained entry's `kinds` ("exp_avg",
    // ...), as if one process had stepped it. Nothing when the shards have no state yet.
    template <Optimizer Full, Optimizer Shard>
    void gather_state(communicator& comm, const Shard& shard, Full& full, const std::vector<parameter_entry>& entries,
                      const std::vector<std::string>& kinds) {
        full.set_steps(shard.steps());
        if (shard.steps() == 0) {
            full.reset_state([](const std::string&) { return false; });
            return;
        }
        std::map<std::string, const float*> mine;
        shard.visit_state([&](const std::string& name, cview<float> t) { mine[name] = t.data; });
        full.reset_state([&](const std::string& name) { return is_trained_state(name, entries, kinds.front()); });
        std::map<std::string, tensor_view<float>> whole;
        full.visit_state([&](const std::string& name, tensor_view<float> t) { whole.emplace(name, t); });
        for (const std::string& kind : kinds) {
            gather(
                [&](std::size_t k) {
                    const auto it = mine.find(kind + "." + shard_[k].name);
                    check(it != mine.end(),
                          [&] { return "zero_partition: no " + kind + " state for " + shard_[k].name; });
                    return it->second;
                },
                comm);
            for (const placed& p : trained_) {
                const parameter_entry& e = entries[p.entry];
                std::copy_n(flat_.begin() + std::ptrdiff_t(p.flat), e.value.numel(),
                            whole.at(kind + "." + e.name).data);
            }
        }
    }

    // The shard's state from a full optimizer's (each rank keeps its slices; no communication).
    template <Optimizer Full, Optimizer Shard>
    void scatter_state(const Full& full, Shard& shard) const {
        shard.set_steps(full.steps());
        std::map<std::string, const float*> whole;
        full.visit_state([&](const std::string& name, cview<float> t) { whole[name] = t.data; });
        shard.reset_state([&](const std::string& name) { return whole.contains(full_state_name(name)); });
        shard.visit_state([&](const std::string& name, tensor_view<float> t) {
            const std::size_t k = slice_named(name);
            std::copy_n(whole.at(full_state_name(name)) + mine_[k].offset, mine_[k].count, t.data);
        });
    }

private:
    struct placed {
        std::size_t entry, flat; // entry index; where it starts in the flat vector
    };
    struct slice {
        std::size_t entry, offset, count, chunk_offset; // elements [offset, offset + count) of the entry
        index_t first_row = 0, rows = 0;                // a piece of a maskable entry: its rows; else 0 rows
    };

    // Entries whose rows may be masked (parameter_table::set_row_mask: the embedding and the head).
    static bool can_have_row_mask(const parameter_entry& e) {
        return (e.group == param_group::embedding || e.group == param_group::head) && e.value.shape.rank == 2;
    }
    void add_piece(const parameter_entry& e, std::size_t entry, std::size_t offset, std::size_t count,
                   std::size_t chunk_offset, shape piece_shape, index_t first_row, index_t rows) {
        std::size_t same = 0;
        for (const slice& m : mine_)
            same += m.entry == entry;
        mine_.push_back({entry, offset, count, chunk_offset, first_row, rows});
        parameter_entry s = e;
        entry_names_.push_back(e.name);
        if (same > 0) s.name += "#" + std::to_string(same);
        s.value = tensor_view<float>{e.value.data + offset, piece_shape};
        s.grad = tensor_view<float>{e.grad.data + offset, piece_shape};
        s.row_mask = nullptr; // refresh_row_masks
        shard_.push_back(s);
    }
    // Elements [from, to) of e cut at row boundaries: a partial first row, whole rows, a partial last row.
    void add_row_pieces(const parameter_entry& e, std::size_t entry, std::size_t from, std::size_t to,
                        std::size_t chunk_offset) {
        const std::size_t cols = std::size_t(e.value.numel() / e.value.dim(0));
        std::size_t at = from;
        while (at < to) {
            const std::size_t row = at / cols, column = at % cols;
            std::size_t end = 0;
            shape piece{};
            index_t rows = 1;
            if (column != 0 || to - at < cols) { // a part of one row
                end = std::min(to, (row + 1) * cols);
                piece = shape{1, index_t(end - at)};
            } else { // whole rows
                rows = index_t((to - at) / cols);
                end = at + std::size_t(rows) * cols;
                piece = shape{rows, index_t(cols)};
            }
            add_piece(e, entry, at, end - at, chunk_offset + (at - from), piece, index_t(row), rows);
            at = end;
        }
    }
    // Each piece's mask: its rows of the entry's mask, or none when the entry has none.
    void refresh_row_masks(const std::vector<parameter_entry>& entries) {
        for (std::size_t k = 0; k < mine_.size(); ++k) {
            if (mine_[k].rows == 0) continue;
            const std::vector<std::uint8_t>* mask = entries[mine_[k].entry].row_mask;
            if (mask == nullptr) {
                shard_[k].row_mask = nullptr;
                continue;
            }
            check(index_t(mask->size()) == entries[mine_[k].entry].value.dim(0), [&] {
                return "zero_partition: the row mask of " + entries[mine_[k].entry].name + " does not fit its rows";
            });
            std::copy_n(mask->begin() + std::ptrdiff_t(mine_[k].first_row), mine_[k].rows, masks_[k].begin());
            shard_[k].row_mask = &masks_[k];
        }
    }

    std::size_t total_owned() const {
        std::size_t n = 0;
        for (const slice& s : mine_)
            n += s.count;
        return n;
    }
    // The chunk from data_of(k) for each slice k, then all chunks into flat_.
    template <class DataOf>
    void gather(DataOf&& data_of, communicator& comm) {
        std::fill(chunk_buffer_.begin(), chunk_buffer_.end(), 0.0f);
        for (std::size_t k = 0; k < mine_.size(); ++k)
            std::copy_n(data_of(k), mine_[k].count, chunk_buffer_.begin() + std::ptrdiff_t(mine_[k].chunk_offset));
        comm.all_gather(chunk_buffer_, flat_);
    }
    static bool is_trained_state(const std::string& name, const std::vector<parameter_entry>& entries,
                                 const std::string& kind) {
        for (const parameter_entry& e : entries)
            if (trains(e) && name == kind + "." + e.name) return true;
        return false;
    }
    // A shard's state name ("exp_avg.<piece>", the piece "<entry>#1" ...) as the full optimizer's ("exp_avg.<entry>").
    std::string full_state_name(const std::string& state_name) const {
        const std::size_t dot = state_name.find('.');
        return state_name.substr(0, dot + 1) + entry_names_[slice_named(state_name)];
    }
    std::size_t slice_named(const std::string& state_name) const {
        const std::string entry = state_name.substr(state_name.find('.') + 1);
        for (std::size_t k = 0; k < shard_.size(); ++k)
            if (shard_[k].name == entry) return k;
        fail("zero_partition: the state " + state_name + " belongs to no slice of this rank");
    }

    int rank_, size_;
    std::vector<placed> trained_;
    std::vector<slice> mine_;
    std::vector<parameter_entry> shard_;
    std::vector<std::string> entry_names_;         // per slice: the name of the entry it is a piece of
    std::vector<std::vector<std::uint8_t>> masks_; // per slice: its rows' mask (pieces of maskable entries)
    std::size_t total_ = 0, chunk_ = 0;
    std::vector<float> flat_, chunk_buffer_;
};

} // namespace tl::dist
