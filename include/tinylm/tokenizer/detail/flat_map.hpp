// tinylm/tokenizer/detail/flat_map.hpp: small open-addressing hash tables for the hot loops of BPE
// (pair → merge, word → count). Not a general container: keys are never erased.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tl::detail {

inline std::uint64_t mix64(std::uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

// A fast non-cryptographic hash of bytes (64-bit words, then a final mix).
inline std::uint64_t hash_bytes(std::string_view s) {
    std::uint64_t h = 0x9E3779B97F4A7C15ull ^ (s.size() * 0x100000001b3ull);
    const char* p = s.data();
    std::size_t n = s.size();
    while (n >= 8) {
        std::uint64_t w;
        std::memcpy(&w, p, 8);
        h = (h ^ mix64(w)) * 0x9E3779B97F4A7C15ull;
        p += 8;
        n -= 8;
    }
    std::uint64_t w = 0;
    std::memcpy(&w, p, n);
    h = (h ^ mix64(w ^ n)) * 0x9E3779B97F4A7C15ull;
    return mix64(h);
}

// uint64 key (never ~0) → V.
template <class V>
class u64_map {
public:
    static constexpr std::uint64_t empty_key = ~std::uint64_t{0};

    explicit u64_map(std::size_t expected = 16) { rehash(expected * 2); }

    V* find(std::uint64_t key) {
        std::size_t i = mix64(key) & mask_;
        while (true) {
            if (keys_[i] == key) return &values_[i];
            if (keys_[i] == empty_key) return nullptr;
            i = (i + 1) & mask_;
        }
    }
    const V* find(std::uint64_t key) const { return const_cast<u64_map*>(this)->find(key); }

    // The value for key, default-constructed when new.
    V& operator[](std::uint64_t key) {
        if ((size_ + 1) * 4 > keys_.size() * 3) rehash(keys_.size() * 2);
        std::size_t i = mix64(key) & mask_;
        while (true) {
            if (keys_[i] == key) return values_[i];
            if (keys_[i] == empty_key) {
                keys_[i] = key;
                ++size_;
                return values_[i];
            }
            i = (i + 1) & mask_;
        }
    }
    std::size_t size() const { return size_; }

    template <class F>
    void for_each(F&& f) const {
        for (std::size_t i = 0; i < keys_.size(); ++i)
            if (keys_[i] != empty_key) f(keys_[i], values_[i]);
    }

private:
    void rehash(std::size_t capacity) {
        std::size_t cap = 16;
        while (cap < capacity)
            cap *= 2;
        std::vector<std::uint64_t> old_keys(cap, empty_key);
        std::vector<V> old_values(cap);
        old_keys.swap(keys_);
        old_values.swap(values_);
        mask_ = cap - 1;
        size_ = 0;
        for (std::size_t i = 0; i < old_keys.size(); ++i) {
            if (old_keys[i] == empty_key) continue;
            std::size_t j = mix64(old_keys[i]) & mask_;
            while (keys_[j] != empty_key)
                j = (j + 1) & mask_;
            keys_[j] = old_keys[i];
            values_[j] = std::move(old_values[i]);
            ++size_;
        }
    }
    std::vector<std::uint64_t> keys_;
    std::vector<V> values_;
    std::size_t mask_ = 0;
    std::size_t size_ = 0;
};

// string_view key → uint64 count. Keys up to 28 bytes are copied into the slot (one cache line holds the
// whole comparison); longer keys point into memory the caller keeps alive.
class word_counter {
public:
    // With own_keys, long keys are copied into storage of the counter's own.
    explicit word_counter(std::size_t expected = 1024, bool own_keys = false) : own_keys_(own_keys) {
        rehash(expected * 2);
    }

    void add(std::string_view word, std::uint64_t n = 1) { add_hashed(word, hash_bytes(word), n); }
    // Adds every word of another counter (its hashes are reused).
    void add_all(const word_counter& other) {
        for (const slot& s : other.slots_)
            if (s.count) add_hashed(s.key(), s.hash, s.count);
    }

    std::size_t size() const { return size_; }
    template <class F>
    void for_each(F&& f) const {
        for (const slot& s : slots_)
            if (s.count) f(s.key(), s.count);
    }

private:
    static constexpr std::size_t inline_bytes = 28;
    struct slot {
        std::uint64_t hash = 0;
        std::uint64_t count = 0;
        std::uint32_t len = 0;
        char bytes[inline_bytes] = {}; // the key, or a pointer to it when longer
        const char* data() const {
            if (len <= inline_bytes) return bytes;
            const char* p;
            std::memcpy(&p, bytes, sizeof p);
            return p;
        }
        std::string_view key() const { return {data(), len}; }
    };
    static_assert(sizeof(slot) == 48);

    static void store_pointer(slot& s, const char* p) { std::memcpy(s.bytes, &p, sizeof p); }

public:
    void add_hashed(std::string_view word, std::uint64_t h, std::uint64_t n) {
        if ((size_ + 1) * 2 > slots_.size()) rehash(slots_.size() * 2);
        std::size_t i = h & mask_;
        while (true) {
            slot& s = slots_[i];
            if (s.count == 0) {
                s.hash = h;
                s.count = n;
                s.len = static_cast<std::uint32_t>(word.size());
                if (word.size() <= inline_bytes)
                    std::memcpy(s.bytes, word.data(), word.size());
                else if (own_keys_)
                    store_pointer(s, owned_.emplace_back(word).data());
                else
                    store_pointer(s, word.data());
                ++size_;
                return;
            }
            if (s.hash == h && s.len == word.size() && std::memcmp(s.data(), word.data(), word.size()) == 0) {
                s.count += n;
                return;
            }
            i = (i + 1) & mask_;
        }
    }

private:
    void rehash(std::size_t capacity) {
        std::size_t cap = 16;
        while (cap < capacity)
            cap *= 2;
        std::vector<slot> old(cap);
        old.swap(slots_);
        mask_ = cap - 1;
        size_ = 0;
        for (const slot& s : old) {
            if (!s.count) continue;
            std::size_t i = s.hash & mask_;
            while (slots_[i].count)
                i = (i + 1) & mask_;
            slots_[i] = s;
            ++size_;
        }
    }
    std::vector<slot> slots_;
    std::size_t mask_ = 0;
    std::size_t size_ = 0;
    bool own_keys_ = false;
    std::deque<std::string> owned_; // stable addresses
};

} // namespace tl::detail
