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
// full state in the usual names, so resuming with another N re-splits it). Rows masks (vocabulary growth) cannot
// be sliced this way: a partition refuses entries that have one.
#pragma once

#include <tinylm/dist/communicator.hpp>
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
                check(entries[i].row_mask == nullptr, [&] {
                    return "zero_partition: " + entries[i].name +
                           " trains only some rows (a row mask), which ZeRO cannot shard; train without zero";
                });
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
            const std::size_t offset = from - p.flat, count = to - from;
            mine_.push_back({p.entry, offset, count, from - begin});
            parameter_entry s = e;
            s.value = tensor_view<float>{e.value.data + offset, shape{index_t(count)}};
            s.grad = tensor_view<float>{e.grad.data + offset, shape{index_t(count)}};
            shard_.push_back(s);
        }
        flat_.resize(chunk_ * std::size_t(size_));
        chunk_buffer_.resize(chunk_);
    }

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

    void reduce_scatter_gradients(communicator& comm, const std::vector<parameter_entry>& entries) {
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

    double global_grad_norm(communicator& comm) const {
        double squares = 0;
        for (const parameter_entry& s : shard_)
            for (index_t j = 0; j < s.grad.numel(); ++j)
                squares += double(s.grad.data[j]) * double(s.grad.data[j]);
        return std::sqrt(comm.sum(squares));
    }

    void scale_gradients(float scale) {
        for (const parameter_entry& s : shard_)
            for (index_t j = 0; j < s.grad.numel(); ++j)
                s.grad.data[j] *= scale;
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
        shard.reset_state([&](const std::string& name) { return whole.contains(name); });
        shard.visit_state([&](const std::string& name, tensor_view<float> t) {
            const std::size_t k = slice_named(name);
            std::copy_n(whole.at(name) + mine_[k].offset, mine_[k].count, t.data);
        });
    }

private:
    struct placed {
        std::size_t entry, flat; // entry index; where it starts in the flat vector
    };
    struct slice {
        std::size_t entry, offset, count, chunk_offset; // elements [offset, offset + count) of the entry
    };

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
    std::size_t total_ = 0, chunk_ = 0;
    std::vector<float> flat_, chunk_buffer_;
};

} // namespace tl::dist
