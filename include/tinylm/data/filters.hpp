// tinylm/data/filters.hpp: the alphabet filter and its presets.
//
// A sentence passes when every letter in it (Unicode category L*) belongs to the allowed alphabet; digits,
// punctuation, symbols and combining marks (such as the stress mark U+0301) are always allowed. The first
// offending letter is returned so that reports can explain each removal.
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/data/normalize.hpp>
#include <tinylm/data/utf8.hpp>

#include <algorithm>
#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tl::data {

class alphabet {
public:
    alphabet() = default; // empty: every letter allowed
    // Letters given as UTF-8; both cases are added.
    static alphabet from_letters(std::string_view letters, std::string name) {
        alphabet a;
        a.name_ = std::move(name);
        a.any_ = false;
        for (std::size_t i = 0; i < letters.size();) {
            const char32_t c = next_cp(letters, i);
            if (is_space(c)) continue;
            a.add(c);
            a.add(to_lower(c));
            a.add(static_cast<char32_t>(utf8proc_toupper(static_cast<utf8proc_int32_t>(c))));
        }
        return a;
    }
    static alphabet any() { return alphabet(); }
    // The 33 letters of modern Russian.
    static alphabet russian() { return from_letters("абвгдеёжзийклмнопрстуфхцчшщъыьэюя", "russian"); }
    // Russian plus the six Tatar letters ә ө ү җ ң һ.
    static alphabet tatar() { return from_letters("абвгдеёжзийклмнопрстуфхцчшщъыьэюяәөүҗңһ", "tatar"); }
    static alphabet latin() { return from_letters("abcdefghijklmnopqrstuvwxyz", "latin"); }
    static alphabet preset(std::string_view name) {
        if (name == "russian" || name == "ru") return russian();
        if (name == "tatar" || name == "tt") return tatar();
        if (name == "latin" || name == "en") return latin();
        if (name == "any" || name.empty()) return any();
        fail("alphabet: unknown preset '" + std::string(name) + "' (russian, tatar, latin, any)");
    }
    alphabet& add_letters(std::string_view letters) {
        *this = merge(from_letters(letters, name_));
        return *this;
    }

    bool allows_all() const { return any_; }
    const std::string& name() const { return name_; }
    bool contains(char32_t c) const {
        if (any_) return true;
        if (c >= 0x400 && c < 0x500) return cyr_[c - 0x400];
        if (c < 0x80) return ascii_[c];
        return std::binary_search(other_.begin(), other_.end(), c);
    }
    // The first letter of `text` outside the alphabet, if any.
    std::optional<char32_t> first_foreign_letter(std::string_view text) const {
        if (any_) return std::nullopt;
        for (std::size_t i = 0; i < text.size();) {
            const auto b = static_cast<unsigned char>(text[i]);
            if (b < 0x80) {
                ++i;
                if (((b | 0x20) >= 'a' && (b | 0x20) <= 'z') && !ascii_[b]) return char32_t(b);
                continue;
            }
            const char32_t c = next_cp(text, i);
            if (!contains(c) && is_letter(c)) return c;
        }
        return std::nullopt;
    }

private:
    void add(char32_t c) {
        if (c >= 0x400 && c < 0x500)
            cyr_[c - 0x400] = true;
        else if (c < 0x80)
            ascii_[c] = true;
        else if (!std::binary_search(other_.begin(), other_.end(), c))
            other_.insert(std::upper_bound(other_.begin(), other_.end(), c), c);
    }
    alphabet merge(const alphabet& o) const {
        alphabet r = *this;
        r.any_ = any_ && o.any_;
        for (int k = 0; k < 0x100; ++k)
            r.cyr_[k] = r.cyr_[k] || o.cyr_[k];
        for (int k = 0; k < 0x80; ++k)
            r.ascii_[k] = r.ascii_[k] || o.ascii_[k];
        for (char32_t c : o.other_)
            r.add(c);
        return r;
    }
    std::string name_ = "any";
    bool any_ = true;
    std::array<bool, 0x100> cyr_{};
    std::array<bool, 0x80> ascii_{};
    std::vector<char32_t> other_;
};

// Letters (category L*) in `text`.
inline std::size_t count_letters(std::string_view text) {
    std::size_t n = 0;
    for (std::size_t i = 0; i < text.size();)
        n += is_letter(next_cp(text, i));
    return n;
}

} // namespace tl::data
