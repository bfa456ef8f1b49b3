// tinylm/cuda/plan_cache.hpp: a map with a fixed capacity that forgets its least recently used entry when full;
// gpu::blas keeps its cuBLASLt plans in one (src/cuda/blas.cu).
//
// Why bounded: a plan is keyed by the product's shape, and the mixture of experts' grouped products take m = an
// expert's row count, which changes with the routing from step to step. An unbounded cache would then grow with every
// count ever seen (docs/gpu.md, "Mixture of experts on the device"); a dense step repeats the same few hundred
// products, far below the capacity, so it still plans each once. Least recently used: the products of the current step
// stay, counts not seen for a while go. The eviction scans the entries for the oldest use, O(capacity) on a miss only,
// which is small against the planning a miss pays for anyway (a cuBLASLt heuristic query). Plain C++ (tested on the
// CPU, test_cuda_math); not thread-safe, as gpu::blas is used from one thread.
#pragma once

#include <tinylm/core/error.hpp>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>

namespace tl::gpu {

template <class Key, class Value>
class lru_cache {
public:
    explicit lru_cache(std::size_t capacity) : capacity_(capacity) {
        check(capacity > 0, "gpu::lru_cache: the capacity must be positive");
    }

    // The value under `key`; when absent, make() (returning std::unique_ptr<Value>) makes it, and the least recently
    // used entry goes first if the cache is full. If make() throws, the cache is unchanged.
    template <class Make>
    Value& get(const Key& key, Make&& make) {
        if (auto found = by_key_.find(key); found != by_key_.end()) {
            found->second.last_use = ++clock_;
            return *found->second.value;
        }
        std::unique_ptr<Value> made = make();
        if (by_key_.size() == capacity_) {
            auto oldest = by_key_.begin();
            for (auto it = by_key_.begin(); it != by_key_.end(); ++it)
                if (it->second.last_use < oldest->second.last_use) oldest = it;
            by_key_.erase(oldest);
            ++evictions_;
        }
        entry& e = by_key_[key];
        e.value = std::move(made);
        e.last_use = ++clock_;
        return *e.value;
    }
    bool contains(const Key& key) const { return by_key_.contains(key); }
    std::size_t size() const { return by_key_.size(); }
    std::size_t capacity() const { return capacity_; }
    std::size_t evictions() const { return evictions_; } // entries forgotten to make room, since construction

private:
    struct entry {
        std::unique_ptr<Value> value;
        std::uint64_t last_use = 0;
    };
    std::map<Key, entry> by_key_;
    std::size_t capacity_;
    std::uint64_t clock_ = 0;
    std::size_t evictions_ = 0;
};

} // namespace tl::gpu
