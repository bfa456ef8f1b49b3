// tinylm/core/json_field.hpp: typed reads of JSON values from files tinylm did not write.
//
//   json_as<T>(v, where, name)              v converted to T, or tl::error "<where>: <name> must be ..., not ..."
//   json_field<T>(obj, key, where)          obj[key], which must be present (a missing or null key is an error)
//   json_field_or<T>(obj, key, fb, where)   obj[key], or fb when obj is not an object or the key is missing/null
//   json_deeper_than(j, limit)             nesting check without recursion
//   parse_json_text(text, where)            nlohmann's parse with every nlohmann exception turned into tl::error
//
// nlohmann's own get<T>() throws type_error for a string where a number is expected, and converts 1e22 to int
// by a plain cast (undefined behaviour). These helpers check the JSON type and the numeric range first, so a
// hostile file gets a tl::error naming the file and the field. T: bool, std::string, an integer or floating type,
// std::vector of those, or a nlohmann json (no conversion). Integers accept a float only when it holds an exact
// integer within T's range (some writers store 2048 as 2048.0).
// Needs nlohmann_json on the include path: tinylm::tokenizer and every target above it have it.
#pragma once

#include <tinylm/core/error.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <concepts>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace tl {

namespace detail {
template <class T>
inline constexpr bool is_vector_v = false;
template <class T, class A>
inline constexpr bool is_vector_v<std::vector<T, A>> = true;

// The value for an error message, cut short: a hostile value can be megabytes long.
template <class Json>
std::string json_excerpt(const Json& v) {
    std::string s = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    if (s.size() > 60) s = s.substr(0, 57) + "...";
    return s;
}

template <class T>
std::string json_type_name() {
    if constexpr (std::is_same_v<T, bool>)
        return "true or false";
    else if constexpr (std::is_same_v<T, std::string>)
        return "a string";
    else if constexpr (std::integral<T>)
        return "an integer in [" + std::to_string(std::numeric_limits<T>::min()) + ", " +
               std::to_string(std::numeric_limits<T>::max()) + "]";
    else if constexpr (std::floating_point<T>)
        return "a number";
    else if constexpr (is_vector_v<T>)
        return "a list";
    else
        return "a value";
}

// An integer value of v, whatever nlohmann stored, when it lies in T's range.
template <std::integral T, class Json>
bool json_integer(const Json& v, T& out) {
    if (v.is_number_unsigned()) {
        const auto u = v.template get<std::uint64_t>();
        if (u > static_cast<std::uint64_t>(std::numeric_limits<T>::max())) return false;
        out = static_cast<T>(u);
        return true;
    }
    if (v.is_number_integer()) {
        const auto i = v.template get<std::int64_t>();
        if (!std::in_range<T>(i)) return false;
        out = static_cast<T>(i);
        return true;
    }
    if (v.is_number_float()) {
        const double d = v.template get<double>();
        // 2^63 and 2^64 are exact doubles; comparing against them avoids rounding max() up.
        const double lo = static_cast<double>(std::numeric_limits<T>::min());
        const double hi = std::ldexp(1.0, std::numeric_limits<T>::digits); // max() + 1
        if (!(d >= lo && d < hi) || std::trunc(d) != d) return false;
        out = static_cast<T>(d);
        return true;
    }
    return false;
}
} // namespace detail

template <class T, class Json>
T json_as(const Json& v, const std::string& where, std::string_view name) {
    const auto bad = [&]() -> T {
        fail(where + ": " + std::string(name) + " must be " + detail::json_type_name<T>() + ", not " +
             detail::json_excerpt(v));
    };
    if constexpr (std::is_same_v<T, nlohmann::json> || std::is_same_v<T, nlohmann::ordered_json>) {
        return T(v);
    } else if constexpr (std::is_same_v<T, bool>) {
        return v.is_boolean() ? v.template get<bool>() : bad();
    } else if constexpr (std::is_same_v<T, std::string>) {
        return v.is_string() ? v.template get<std::string>() : bad();
    } else if constexpr (std::integral<T>) {
        T out{};
        return detail::json_integer(v, out) ? out : bad();
    } else if constexpr (std::floating_point<T>) {
        if (!v.is_number()) return bad();
        const double d = v.template get<double>();
        if (std::abs(d) > static_cast<double>(std::numeric_limits<T>::max()))
            fail(where + ": " + std::string(name) + " = " + detail::json_excerpt(v) + " is out of range");
        return static_cast<T>(d);
    } else if constexpr (detail::is_vector_v<T>) {
        if (!v.is_array()) return bad();
        T out;
        out.reserve(v.size());
        for (std::size_t i = 0; i < v.size(); ++i)
            out.push_back(
                json_as<typename T::value_type>(v[i], where, std::string(name) + "[" + std::to_string(i) + "]"));
        return out;
    } else {
        static_assert(sizeof(T) == 0, "json_as: unsupported type");
    }
}

template <class T, class Json>
T json_field(const Json& obj, std::string_view key, const std::string& where) {
    check(obj.is_object(), [&] { return where + ": expected a JSON object, not " + detail::json_excerpt(obj); });
    const auto it = obj.find(std::string(key));
    check(it != obj.end() && !it->is_null(),
          [&] { return where + ": the field \"" + std::string(key) + "\" is missing"; });
    return json_as<T>(*it, where, key);
}

template <class T, class Json>
T json_field_or(const Json& obj, std::string_view key, T fallback, const std::string& where) {
    if (!obj.is_object()) return fallback;
    const auto it = obj.find(std::string(key));
    if (it == obj.end() || it->is_null()) return fallback;
    return json_as<T>(*it, where, key);
}

// Whether j nests arrays and objects deeper than `limit` levels. Iterative: it runs before recursive code (copies,
// dump(), conversions) sees JSON from strangers.
template <class Json>
bool json_deeper_than(const Json& j, int limit) {
    std::vector<std::pair<const Json*, int>> todo{{&j, 0}};
    while (!todo.empty()) {
        const auto [v, depth] = todo.back();
        todo.pop_back();
        if (!v->is_structured()) continue;
        if (depth >= limit) return true;
        for (const auto& x : *v)
            todo.emplace_back(&x, depth + 1);
    }
    return false;
}

// Parses JSON text; any nlohmann failure (syntax, a number beyond double such as 1e3087, bad UTF-8 later on)
// becomes tl::error naming `where`.
template <class Json = nlohmann::json, class Input>
Json parse_json_text(Input&& text, const std::string& where) {
    try {
        return Json::parse(std::forward<Input>(text));
    } catch (const nlohmann::json::exception& e) {
        fail(where + ": invalid JSON (" + e.what() + ")");
    }
}

} // namespace tl
