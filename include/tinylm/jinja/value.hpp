// tinylm/jinja/value.hpp: the values of the Jinja subset that chat templates use.
//
// A value is undefined, none, a bool, an int, a float, a string, a list (or tuple), a dict (insertion-ordered,
// string keys), a namespace (a dict that templates may assign attributes to) or a callable. Lists and dicts are
// shared by reference as in Python. Strings are UTF-8; lengths, indices and slices count code points.
// Printing (`str`), `repr` and `tojson` follow Python, so that renderings match Jinja2 byte for byte.
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/core/utf8.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace tl::jinja {

// An error without a position; the interpreter adds the line and column of the expression it was evaluating.
class eval_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

[[noreturn]] inline void eval_fail(const std::string& message) { throw eval_error(message); }

// Limits on what a template may make tinylm do. Chat templates come inside strangers' tokenizer_config.json, so a
// template must not be able to overflow the stack or exhaust memory or time; each limit raises tl::error naming
// it. Real templates stay far below them (nesting under 10 levels, prompts of a few MB at most).
struct limits {
    static constexpr int max_nesting = 64;                         // parser: depth of statements and expressions
    static constexpr int max_call_depth = 256;                     // interpreter: nested evaluations, macro recursion
    static constexpr int max_value_depth = 128;                    // nested lists/dicts rendered or read from JSON
    static constexpr std::size_t max_output_bytes = 64u << 20;     // any string the template builds
    static constexpr std::int64_t max_loop_iterations = 1'000'000; // for-loop iterations of one render (~0.1 s)
    static constexpr std::int64_t max_range = 100'000;             // items of range(), as jinja2's sandbox (MAX_RANGE)
};

// Throws when a string the template is about to build would pass the output limit.
inline void check_output_size(std::size_t bytes, const char* what) {
    if (bytes > limits::max_output_bytes)
        eval_fail(std::string(what) + ": the result would exceed the output limit of " +
                  std::to_string(limits::max_output_bytes >> 20) + " MiB");
}

struct value;
struct list_data;
struct dict_data;
struct callable_data;
using list_ptr = std::shared_ptr<list_data>;
using dict_ptr = std::shared_ptr<dict_data>;
using callable_ptr = std::shared_ptr<const callable_data>;

struct undefined_t {
    std::string hint; // what was looked up, for the error when the value is used
};
struct none_t {};

struct value {
    std::variant<undefined_t, none_t, bool, std::int64_t, double, std::string, list_ptr, dict_ptr, callable_ptr> v;

    value() : v(undefined_t{}) {}
    value(none_t n) : v(n) {}
    value(undefined_t u) : v(std::move(u)) {}
    value(bool b) : v(b) {}
    value(int i) : v(static_cast<std::int64_t>(i)) {}
    value(std::int64_t i) : v(i) {}
    value(double d) : v(d) {}
    value(std::string s) : v(std::move(s)) {}
    value(std::string_view s) : v(std::string(s)) {}
    value(const char* s) : v(std::string(s)) {}
    value(list_ptr l) : v(std::move(l)) {}
    value(dict_ptr d) : v(std::move(d)) {}
    value(callable_ptr c) : v(std::move(c)) {}

    bool is_undefined() const { return v.index() == 0; }
    bool is_none() const { return v.index() == 1; }
    bool is_bool() const { return v.index() == 2; }
    bool is_int() const { return v.index() == 3; }
    bool is_float() const { return v.index() == 4; }
    bool is_number() const { return is_int() || is_float() || is_bool(); }
    bool is_string() const { return v.index() == 5; }
    bool is_list() const { return v.index() == 6; }
    bool is_dict() const { return v.index() == 7; }
    bool is_callable() const { return v.index() == 8; }

    bool as_bool() const { return std::get<bool>(v); }
    std::int64_t as_int() const { return is_bool() ? std::int64_t{std::get<bool>(v)} : std::get<std::int64_t>(v); }
    double as_double() const {
        if (is_float()) return std::get<double>(v);
        return static_cast<double>(as_int());
    }
    const std::string& str_ref() const { return std::get<std::string>(v); }
    const list_ptr& list() const { return std::get<list_ptr>(v); }
    const dict_ptr& dict() const { return std::get<dict_ptr>(v); }
    const callable_ptr& callable() const { return std::get<callable_ptr>(v); }
    const std::string& undefined_hint() const { return std::get<undefined_t>(v).hint; }
};

struct list_data {
    std::vector<value> items;
    bool tuple = false;
};

enum class dict_kind { plain, namespace_, loop };

struct dict_data {
    std::vector<std::pair<std::string, value>> items;
    dict_kind kind = dict_kind::plain;

    const value* find(std::string_view key) const {
        for (const auto& [k, v] : items)
            if (k == key) return &v;
        return nullptr;
    }
    void set(std::string key, value v) {
        for (auto& [k, old] : items)
            if (k == key) {
                old = std::move(v);
                return;
            }
        items.emplace_back(std::move(key), std::move(v));
    }
};

using kwargs_t = std::vector<std::pair<std::string, value>>;

struct callable_data {
    std::string name;
    std::function<value(std::vector<value>& args, kwargs_t& kwargs)> fn;
};

inline value make_list(std::vector<value> items = {}, bool tuple = false) {
    auto l = std::make_shared<list_data>();
    l->items = std::move(items);
    l->tuple = tuple;
    return value(std::move(l));
}
inline value make_dict(dict_kind kind = dict_kind::plain) {
    auto d = std::make_shared<dict_data>();
    d->kind = kind;
    return value(std::move(d));
}
inline value make_callable(std::string name, std::function<value(std::vector<value>&, kwargs_t&)> fn) {
    return value(std::make_shared<const callable_data>(callable_data{std::move(name), std::move(fn)}));
}

// ---- UTF-8 ---------------------------------------------------------------------------------------------------

namespace utf8 {

// Decodes the code point at s[i] and advances i (tl::utf8::decode); invalid bytes decode as themselves (one
// byte each).
inline char32_t next(std::string_view s, std::size_t& i) {
    std::size_t j = i;
    bool ok;
    const char32_t c = tl::utf8::decode(s, j, ok);
    if (!ok) return static_cast<unsigned char>(s[i++]);
    i = j;
    return c;
}

using tl::utf8::append;

inline std::vector<char32_t> decode(std::string_view s) {
    std::vector<char32_t> out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size();)
        out.push_back(next(s, i));
    return out;
}

inline std::string encode(const std::vector<char32_t>& cps) {
    std::string out;
    for (char32_t c : cps)
        append(out, c);
    return out;
}

inline std::size_t length(std::string_view s) {
    std::size_t n = 0;
    for (std::size_t i = 0; i < s.size();) {
        next(s, i);
        ++n;
    }
    return n;
}

// Python's str.isspace().
constexpr bool is_space(char32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// Python's str.strip/lstrip/rstrip: `chars` null strips whitespace, else the code points in *chars.
inline std::string strip(std::string_view s, bool left, bool right, const std::string* chars = nullptr) {
    const auto cps = decode(s);
    const std::vector<char32_t> set = chars ? decode(*chars) : std::vector<char32_t>{};
    auto drop = [&](char32_t c) {
        if (!chars) return is_space(c);
        for (char32_t x : set)
            if (x == c) return true;
        return false;
    };
    std::size_t b = 0, e = cps.size();
    if (left)
        while (b < e && drop(cps[b]))
            ++b;
    if (right)
        while (e > b && drop(cps[e - 1]))
            --e;
    return encode(std::vector<char32_t>(cps.begin() + static_cast<std::ptrdiff_t>(b),
                                        cps.begin() + static_cast<std::ptrdiff_t>(e)));
}

} // namespace utf8

// ---- conversions ---------------------------------------------------------------------------------------------

inline std::string type_name(const value& v) {
    switch (v.v.index()) {
    case 0:
        return "undefined";
    case 1:
        return "none";
    case 2:
        return "bool";
    case 3:
        return "int";
    case 4:
        return "float";
    case 5:
        return "string";
    case 6:
        return v.list()->tuple ? "tuple" : "list";
    case 7:
        return v.dict()->kind == dict_kind::namespace_ ? "namespace"
               : v.dict()->kind == dict_kind::loop     ? "loop"
                                                       : "dict";
    default:
        return "callable";
    }
}

// Python's repr(float).
inline std::string float_repr(double d) {
    if (std::isnan(d)) return "nan";
    if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
    if (d == 0) return std::signbit(d) ? "-0.0" : "0.0";
    char buf[64];
    const auto r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
    const std::string sci(buf, r.ptr);
    const auto epos = sci.find('e');
    std::string mant = sci.substr(0, epos);
    const int exp = std::stoi(sci.substr(epos + 1));
    std::string sign;
    if (mant[0] == '-') {
        sign = "-";
        mant.erase(0, 1);
    }
    std::string digits;
    for (char c : mant)
        if (c != '.') digits += c;
    if (exp >= -4 && exp < 16) {
        std::string out;
        if (exp < 0) {
            out = "0." + std::string(static_cast<std::size_t>(-exp - 1), '0') + digits;
        } else {
            const auto int_len = static_cast<std::size_t>(exp + 1);
            if (digits.size() <= int_len) {
                out = digits + std::string(int_len - digits.size(), '0') + ".0";
            } else {
                out = digits.substr(0, int_len) + "." + digits.substr(int_len);
            }
        }
        return sign + out;
    }
    std::string out = digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    const int a = exp < 0 ? -exp : exp;
    out += exp < 0 ? "e-" : "e+";
    if (a < 10) out += '0';
    out += std::to_string(a);
    return sign + out;
}

// Python's repr(str).
inline std::string string_repr(std::string_view s) {
    const bool has_single = s.find('\'') != std::string_view::npos;
    const bool has_double = s.find('"') != std::string_view::npos;
    const char q = has_single && !has_double ? '"' : '\'';
    std::string out(1, q);
    for (std::size_t i = 0; i < s.size();) {
        const char32_t c = utf8::next(s, i);
        if (c == static_cast<char32_t>(q) || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c == '\n') {
            out += "\\n";
        } else if (c == '\r') {
            out += "\\r";
        } else if (c == '\t') {
            out += "\\t";
        } else if (c < 0x20 || c == 0x7F || (c >= 0x80 && c < 0xA0)) {
            static const char* hex = "0123456789abcdef";
            out += "\\x";
            out += hex[(c >> 4) & 0xF];
            out += hex[c & 0xF];
        } else {
            utf8::append(out, c);
        }
    }
    out += q;
    return out;
}

std::string repr(const value& v, int depth = 0);

// Python's str(), as `{{ x }}` prints it; undefined prints nothing.
inline std::string to_str(const value& v) {
    switch (v.v.index()) {
    case 0:
        return "";
    case 5:
        return v.str_ref();
    default:
        return repr(v);
    }
}

inline std::string repr(const value& v, int depth) {
    if (depth > limits::max_value_depth)
        eval_fail("value nested deeper than the limit of " + std::to_string(limits::max_value_depth) + " levels");
    switch (v.v.index()) {
    case 0:
        return "";
    case 1:
        return "None";
    case 2:
        return v.as_bool() ? "True" : "False";
    case 3:
        return std::to_string(std::get<std::int64_t>(v.v));
    case 4:
        return float_repr(std::get<double>(v.v));
    case 5:
        return string_repr(v.str_ref());
    case 6: {
        const auto& l = *v.list();
        std::string out = l.tuple ? "(" : "[";
        for (std::size_t i = 0; i < l.items.size(); ++i) {
            if (i) out += ", ";
            out += repr(l.items[i], depth + 1);
        }
        if (l.tuple && l.items.size() == 1) out += ",";
        out += l.tuple ? ")" : "]";
        return out;
    }
    case 7: {
        const auto& d = *v.dict();
        std::string out = "{";
        for (std::size_t i = 0; i < d.items.size(); ++i) {
            if (i) out += ", ";
            out += string_repr(d.items[i].first) + ": " + repr(d.items[i].second, depth + 1);
        }
        out += "}";
        if (d.kind == dict_kind::namespace_) return "<Namespace " + out + ">";
        if (d.kind == dict_kind::loop) return "<LoopContext>";
        return out;
    }
    default:
        return "<function " + v.callable()->name + ">";
    }
}

struct tojson_options {
    int indent = -1; // < 0: one line
    std::string indent_string;
    std::string item_separator = ", ";
    std::string key_separator = ": ";
    bool sort_keys = false;
    bool ensure_ascii = false;
};

// Python's json.dumps (the `tojson` filter of transformers: ensure_ascii=False, keys in insertion order).
inline void tojson(const value& v, std::string& out, const tojson_options& o, int depth = 0) {
    if (depth > limits::max_value_depth)
        eval_fail("tojson: value nested deeper than the limit of " + std::to_string(limits::max_value_depth) +
                  " levels");
    check_output_size(out.size() + std::size_t(depth) * o.indent_string.size(), "tojson");
    auto newline = [&](int d) {
        out += '\n';
        for (int k = 0; k < d; ++k)
            out += o.indent_string;
    };
    auto quote = [&](std::string_view s) {
        static const char* hex = "0123456789abcdef";
        out += '"';
        for (std::size_t i = 0; i < s.size();) {
            const char32_t c = utf8::next(s, i);
            switch (c) {
            case '"':
                out += "\\\"";
                break;
            case '\\':
                out += "\\\\";
                break;
            case '\n':
                out += "\\n";
                break;
            case '\r':
                out += "\\r";
                break;
            case '\t':
                out += "\\t";
                break;
            case '\b':
                out += "\\b";
                break;
            case '\f':
                out += "\\f";
                break;
            default:
                if (c < 0x20 || (o.ensure_ascii && c >= 0x7F)) {
                    auto u16 = [&](unsigned x) {
                        out += "\\u";
                        for (int sh = 12; sh >= 0; sh -= 4)
                            out += hex[(x >> sh) & 0xF];
                    };
                    if (c >= 0x10000) {
                        const unsigned x = static_cast<unsigned>(c) - 0x10000;
                        u16(0xD800 + (x >> 10));
                        u16(0xDC00 + (x & 0x3FF));
                    } else {
                        u16(static_cast<unsigned>(c));
                    }
                } else {
                    utf8::append(out, c);
                }
            }
        }
        out += '"';
    };
    const bool pretty = o.indent >= 0;
    const std::string& item_sep = o.item_separator;
    switch (v.v.index()) {
    case 0:
        eval_fail("tojson: Object of type Undefined is not JSON serializable");
    case 1:
        out += "null";
        return;
    case 2:
        out += v.as_bool() ? "true" : "false";
        return;
    case 3:
        out += std::to_string(std::get<std::int64_t>(v.v));
        return;
    case 4: {
        const double d = std::get<double>(v.v);
        if (std::isnan(d))
            out += "NaN";
        else if (std::isinf(d))
            out += d > 0 ? "Infinity" : "-Infinity";
        else
            out += float_repr(d);
        return;
    }
    case 5:
        quote(v.str_ref());
        return;
    case 6: {
        const auto& items = v.list()->items;
        if (items.empty()) {
            out += "[]";
            return;
        }
        out += '[';
        for (std::size_t i = 0; i < items.size(); ++i) {
            if (i) out += item_sep;
            if (pretty) newline(depth + 1);
            tojson(items[i], out, o, depth + 1);
        }
        if (pretty) newline(depth);
        out += ']';
        return;
    }
    case 7: {
        const auto& d = *v.dict();
        if (d.kind != dict_kind::plain)
            eval_fail("tojson: Object of type " + type_name(v) + " is not JSON serializable");
        if (d.items.empty()) {
            out += "{}";
            return;
        }
        std::vector<const std::pair<std::string, value>*> order;
        for (const auto& kv : d.items)
            order.push_back(&kv);
        if (o.sort_keys)
            std::stable_sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->first < b->first; });
        out += '{';
        for (std::size_t i = 0; i < order.size(); ++i) {
            if (i) out += item_sep;
            if (pretty) newline(depth + 1);
            quote(order[i]->first);
            out += o.key_separator;
            tojson(order[i]->second, out, o, depth + 1);
        }
        if (pretty) newline(depth);
        out += '}';
        return;
    }
    default:
        eval_fail("tojson: Object of type function is not JSON serializable");
    }
}

inline value from_json(const nlohmann::ordered_json& j, int depth = 0) {
    if (depth > limits::max_value_depth)
        fail("chat template: JSON nested deeper than the limit of " + std::to_string(limits::max_value_depth) +
             " levels");
    switch (j.type()) {
    case nlohmann::ordered_json::value_t::null:
        return value(none_t{});
    case nlohmann::ordered_json::value_t::boolean:
        return value(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
        return value(j.get<std::int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned:
        return value(static_cast<std::int64_t>(j.get<std::uint64_t>()));
    case nlohmann::ordered_json::value_t::number_float:
        return value(j.get<double>());
    case nlohmann::ordered_json::value_t::string:
        return value(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
        std::vector<value> items;
        items.reserve(j.size());
        for (const auto& x : j)
            items.push_back(from_json(x, depth + 1));
        return make_list(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
        value d = make_dict();
        for (const auto& [k, x] : j.items())
            d.dict()->items.emplace_back(k, from_json(x, depth + 1));
        return d;
    }
    default:
        fail("chat template: binary JSON values are not supported");
    }
}

inline bool truthy(const value& v) {
    switch (v.v.index()) {
    case 0:
    case 1:
        return false;
    case 2:
        return v.as_bool();
    case 3:
        return std::get<std::int64_t>(v.v) != 0;
    case 4:
        return std::get<double>(v.v) != 0.0;
    case 5:
        return !v.str_ref().empty();
    case 6:
        return !v.list()->items.empty();
    case 7:
        return v.dict()->kind != dict_kind::plain || !v.dict()->items.empty();
    default:
        return true;
    }
}

// Python ==, with Jinja's rule that undefined equals only undefined.
inline bool equal(const value& a, const value& b) {
    if (a.is_number() && b.is_number()) {
        if (a.is_float() || b.is_float()) return a.as_double() == b.as_double();
        return a.as_int() == b.as_int();
    }
    if (a.v.index() != b.v.index()) return false;
    switch (a.v.index()) {
    case 0:
    case 1:
        return true;
    case 5:
        return a.str_ref() == b.str_ref();
    case 6: {
        const auto& x = a.list()->items;
        const auto& y = b.list()->items;
        if (a.list()->tuple != b.list()->tuple || x.size() != y.size()) return false;
        for (std::size_t i = 0; i < x.size(); ++i)
            if (!equal(x[i], y[i])) return false;
        return true;
    }
    case 7: {
        if (a.dict() == b.dict()) return true;
        if (a.dict()->kind != dict_kind::plain || b.dict()->kind != dict_kind::plain) return false;
        const auto& x = a.dict()->items;
        if (x.size() != b.dict()->items.size()) return false;
        for (const auto& [k, v] : x) {
            const value* w = b.dict()->find(k);
            if (!w || !equal(v, *w)) return false;
        }
        return true;
    }
    default:
        return a.callable() == b.callable();
    }
}

// Python <: numbers with numbers, strings with strings (code point order), lists lexicographically.
inline int compare(const value& a, const value& b) {
    if (a.is_number() && b.is_number()) {
        if (a.is_float() || b.is_float()) {
            const double x = a.as_double(), y = b.as_double();
            return x < y ? -1 : x > y ? 1 : 0;
        }
        const auto x = a.as_int(), y = b.as_int();
        return x < y ? -1 : x > y ? 1 : 0;
    }
    if (a.is_string() && b.is_string()) {
        const int c = a.str_ref().compare(b.str_ref());
        return c < 0 ? -1 : c > 0 ? 1 : 0;
    }
    if (a.is_list() && b.is_list()) {
        const auto& x = a.list()->items;
        const auto& y = b.list()->items;
        for (std::size_t i = 0; i < x.size() && i < y.size(); ++i) {
            if (equal(x[i], y[i])) continue;
            return compare(x[i], y[i]);
        }
        return x.size() < y.size() ? -1 : x.size() > y.size() ? 1 : 0;
    }
    eval_fail("cannot compare " + type_name(a) + " with " + type_name(b));
}

} // namespace tl::jinja
