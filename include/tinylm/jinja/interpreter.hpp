// tinylm/jinja/interpreter.hpp: evaluation of parsed templates, with the filters, tests, string and
// dict methods and global functions that chat templates use.
//
// Scoping follows jinja2: `set` inside a for loop stays in that iteration (each iteration starts from the
// enclosing values, hence `namespace()` objects for state carried across iterations), `if` blocks share their
// enclosing scope. Errors are tl::error naming the template, line and column of the failing expression.
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/jinja/parser.hpp>
#include <tinylm/jinja/value.hpp>

#include <utf8proc.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tl::jinja {

struct scope {
    std::vector<std::pair<std::string, value>> vars;
    const scope* parent = nullptr;

    const value* find(std::string_view name) const {
        for (const scope* s = this; s; s = s->parent)
            for (const auto& [k, v] : s->vars)
                if (k == name) return &v;
        return nullptr;
    }
    void set(const std::string& name, value v) {
        for (auto& [k, old] : vars)
            if (k == name) {
                old = std::move(v);
                return;
            }
        vars.emplace_back(name, std::move(v));
    }
};

namespace detail {

inline std::string py_type(const value& v) {
    switch (v.v.index()) {
    case 0:
        return "Undefined";
    case 1:
        return "NoneType";
    case 2:
        return "bool";
    case 3:
        return "int";
    case 4:
        return "float";
    case 5:
        return "str";
    case 6:
        return v.list()->tuple ? "tuple" : "list";
    case 7:
        return type_name(v) == "dict" ? "dict" : type_name(v);
    default:
        return "function";
    }
}

[[noreturn]] inline void fail_undefined(const value& v) {
    eval_fail(v.undefined_hint().empty() ? std::string("value is undefined") : v.undefined_hint());
}

inline void require_defined(const value& v) {
    if (v.is_undefined()) fail_undefined(v);
}

inline char32_t lower_cp(char32_t c) {
    return static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c)));
}
inline char32_t upper_cp(char32_t c) {
    return static_cast<char32_t>(utf8proc_toupper(static_cast<utf8proc_int32_t>(c)));
}
inline bool is_cased_letter(char32_t c) {
    const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
    return cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT;
}

inline std::string map_case(std::string_view s, bool upper) {
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size();)
        utf8::append(out, upper ? upper_cp(utf8::next(s, i)) : lower_cp(utf8::next(s, i)));
    return out;
}

inline std::string capitalize(std::string_view s) {
    std::string out;
    bool first = true;
    for (std::size_t i = 0; i < s.size();) {
        const char32_t c = utf8::next(s, i);
        utf8::append(out, first ? upper_cp(c) : lower_cp(c));
        first = false;
    }
    return out;
}

// Python str.title(): a cased letter after a non-cased character starts a word.
inline std::string py_title(std::string_view s) {
    std::string out;
    bool prev_cased = false;
    for (std::size_t i = 0; i < s.size();) {
        const char32_t c = utf8::next(s, i);
        utf8::append(out, prev_cased ? lower_cp(c) : upper_cp(c));
        prev_cased = is_cased_letter(c);
    }
    return out;
}

// jinja2's title filter: words split at whitespace and -([{<.
inline std::string jinja_title(std::string_view s) {
    std::string out;
    bool word_start = true;
    for (std::size_t i = 0; i < s.size();) {
        const char32_t c = utf8::next(s, i);
        const bool sep = utf8::is_space(c) || c == '-' || c == '(' || c == '{' || c == '[' || c == '<';
        if (sep) {
            utf8::append(out, c);
            word_start = true;
        } else {
            utf8::append(out, word_start ? upper_cp(c) : lower_cp(c));
            word_start = false;
        }
    }
    return out;
}

inline std::vector<std::string> split(const std::string& s, const value& sep, std::int64_t maxsplit, bool from_right) {
    std::vector<std::string> parts;
    if (sep.is_none() || sep.is_undefined()) {
        const auto cps = utf8::decode(s);
        std::vector<std::pair<std::size_t, std::size_t>> words;
        for (std::size_t i = 0; i < cps.size();) {
            while (i < cps.size() && utf8::is_space(cps[i]))
                ++i;
            if (i == cps.size()) break;
            std::size_t j = i;
            while (j < cps.size() && !utf8::is_space(cps[j]))
                ++j;
            words.emplace_back(i, j);
            i = j;
        }
        auto piece = [&](std::size_t b, std::size_t e) {
            return utf8::encode(std::vector<char32_t>(cps.begin() + static_cast<std::ptrdiff_t>(b),
                                                      cps.begin() + static_cast<std::ptrdiff_t>(e)));
        };
        // With maxsplit, the rest keeps its inner and far-end whitespace, as in Python.
        if (maxsplit < 0 || static_cast<std::size_t>(maxsplit) >= words.size()) {
            for (auto [b, e] : words)
                parts.push_back(piece(b, e));
        } else if (!from_right) {
            const auto m = static_cast<std::size_t>(maxsplit);
            for (std::size_t k = 0; k < m; ++k)
                parts.push_back(piece(words[k].first, words[k].second));
            parts.push_back(piece(words[m].first, cps.size()));
        } else {
            const auto m = static_cast<std::size_t>(maxsplit);
            const std::size_t first = words.size() - m;
            parts.push_back(piece(0, words[first - 1].second));
            for (std::size_t k = first; k < words.size(); ++k)
                parts.push_back(piece(words[k].first, words[k].second));
        }
        return parts;
    }
    if (!sep.is_string()) eval_fail("split: separator must be a string, not " + py_type(sep));
    const std::string& d = sep.str_ref();
    if (d.empty()) eval_fail("split: empty separator");
    if (!from_right) {
        std::size_t start = 0;
        for (std::int64_t n = 0; maxsplit < 0 || n < maxsplit; ++n) {
            const auto p = s.find(d, start);
            if (p == std::string::npos) break;
            parts.push_back(s.substr(start, p - start));
            start = p + d.size();
        }
        parts.push_back(s.substr(start));
    } else {
        std::size_t end = s.size();
        std::vector<std::string> rev;
        for (std::int64_t n = 0; maxsplit < 0 || n < maxsplit; ++n) {
            if (end < d.size()) break;
            const auto p = s.rfind(d, end - d.size());
            if (p == std::string::npos) break;
            rev.push_back(s.substr(p + d.size(), end - p - d.size()));
            end = p;
        }
        rev.push_back(s.substr(0, end));
        parts.assign(rev.rbegin(), rev.rend());
    }
    return parts;
}

inline std::string replace_all(const std::string& s, const std::string& from, const std::string& to,
                               std::int64_t count) {
    std::string out;
    if (from.empty()) {
        // Python inserts `to` around every code point.
        std::int64_t n = 0;
        std::size_t i = 0;
        while (true) {
            if (count < 0 || n < count) {
                out += to;
                ++n;
            }
            if (i >= s.size()) break;
            const std::size_t b = i;
            utf8::next(s, i);
            out.append(s, b, i - b);
        }
        return out;
    }
    std::size_t start = 0;
    for (std::int64_t n = 0; count < 0 || n < count; ++n) {
        const auto p = s.find(from, start);
        if (p == std::string::npos) break;
        out.append(s, start, p - start);
        out += to;
        start = p + from.size();
    }
    out.append(s, start);
    return out;
}

// Python's slice.indices.
inline std::vector<std::size_t> slice_indices(std::int64_t n, const value& start, const value& stop,
                                              const value& step) {
    auto num = [](const value& v, const char* what) -> std::optional<std::int64_t> {
        if (v.is_none() || v.is_undefined()) return std::nullopt;
        if (!v.is_int() && !v.is_bool()) eval_fail(std::string("slice ") + what + " must be an integer");
        return v.as_int();
    };
    const std::int64_t st = num(step, "step").value_or(1);
    if (st == 0) eval_fail("slice step cannot be zero");
    auto clamp = [&](std::optional<std::int64_t> x, std::int64_t def) {
        if (!x) return def;
        std::int64_t v = *x;
        if (v < 0) {
            v += n;
            if (v < 0) v = st < 0 ? -1 : 0;
        } else if (v >= n) {
            v = st < 0 ? n - 1 : n;
        }
        return v;
    };
    const std::int64_t b = clamp(num(start, "start"), st < 0 ? n - 1 : 0);
    const std::int64_t e = clamp(num(stop, "stop"), st < 0 ? -1 : n);
    std::vector<std::size_t> idx;
    if (st > 0)
        for (std::int64_t i = b; i < e; i += st)
            idx.push_back(static_cast<std::size_t>(i));
    else
        for (std::int64_t i = b; i > e; i += st)
            idx.push_back(static_cast<std::size_t>(i));
    return idx;
}

// What `for x in v` and the sequence filters iterate over.
inline std::vector<value> iterate(const value& v) {
    switch (v.v.index()) {
    case 0:
        return {};
    case 5: {
        std::vector<value> out;
        const std::string& s = v.str_ref();
        for (std::size_t i = 0; i < s.size();) {
            const std::size_t b = i;
            utf8::next(s, i);
            out.emplace_back(s.substr(b, i - b));
        }
        return out;
    }
    case 6:
        return v.list()->items;
    case 7: {
        if (v.dict()->kind != dict_kind::plain) eval_fail("'" + type_name(v) + "' object is not iterable");
        std::vector<value> out;
        for (const auto& kv : v.dict()->items)
            out.emplace_back(kv.first);
        return out;
    }
    default:
        eval_fail("'" + py_type(v) + "' object is not iterable");
    }
}

inline std::int64_t length(const value& v) {
    switch (v.v.index()) {
    case 0:
        return 0;
    case 5:
        return static_cast<std::int64_t>(utf8::length(v.str_ref()));
    case 6:
        return static_cast<std::int64_t>(v.list()->items.size());
    case 7:
        return static_cast<std::int64_t>(v.dict()->items.size());
    default:
        eval_fail("object of type '" + py_type(v) + "' has no len()");
    }
}

inline bool contains(const value& container, const value& item) {
    switch (container.v.index()) {
    case 0:
        return false;
    case 5:
        if (!item.is_string()) eval_fail("'in <string>' requires string as left operand, not " + py_type(item));
        return container.str_ref().find(item.str_ref()) != std::string::npos;
    case 6:
        for (const auto& x : container.list()->items)
            if (equal(x, item)) return true;
        return false;
    case 7:
        if (!item.is_string()) return false;
        return container.dict()->find(item.str_ref()) != nullptr;
    default:
        eval_fail("argument of type '" + py_type(container) + "' is not iterable");
    }
}

// Positional-or-keyword arguments of filters, tests, methods and functions.
struct arg_reader {
    const std::string& what;
    std::vector<value>& args;
    kwargs_t& kwargs;
    std::size_t used_kwargs = 0;

    value get(std::size_t index, std::string_view name, value def = value()) {
        for (auto& [k, v] : kwargs)
            if (k == name) {
                ++used_kwargs;
                if (index < args.size())
                    eval_fail(what + "() got multiple values for argument '" + std::string(name) + "'");
                return v;
            }
        if (index < args.size()) return args[index];
        return def;
    }
    void done(std::size_t n_positional) const {
        if (args.size() > n_positional)
            eval_fail(what + "() takes at most " + std::to_string(n_positional) + " positional argument(s), " +
                      std::to_string(args.size()) + " given");
        if (used_kwargs != kwargs.size()) {
            for (auto& [k, v] : kwargs)
                eval_fail(what + "() got an unexpected keyword argument '" + k + "'");
        }
    }
};

inline const std::string& need_string(const value& v, const std::string& what) {
    if (v.is_undefined()) fail_undefined(v);
    if (!v.is_string()) eval_fail(what + " expects a string, got " + py_type(v));
    return v.str_ref();
}

inline std::int64_t need_int(const value& v, const std::string& what) {
    if (v.is_undefined()) fail_undefined(v);
    if (!v.is_int() && !v.is_bool()) eval_fail(what + " expects an integer, got " + py_type(v));
    return v.as_int();
}

inline value string_method(const std::string& s, const std::string& name, std::vector<value>& args, kwargs_t& kwargs) {
    arg_reader a{"str." + name, args, kwargs};
    auto opt_chars = [&](std::size_t i, std::string_view n) -> std::optional<std::string> {
        value c = a.get(i, n, value(none_t{}));
        if (c.is_none()) return std::nullopt;
        return need_string(c, "str." + name);
    };
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
        const auto chars = opt_chars(0, "chars");
        a.done(1);
        return value(utf8::strip(s, name != "rstrip", name != "lstrip", chars ? &*chars : nullptr));
    }
    if (name == "split" || name == "rsplit") {
        const value sep = a.get(0, "sep", value(none_t{}));
        const std::int64_t maxsplit = need_int(a.get(1, "maxsplit", value(std::int64_t{-1})), "str." + name);
        a.done(2);
        std::vector<value> out;
        for (auto& p : split(s, sep, maxsplit, name == "rsplit"))
            out.emplace_back(std::move(p));
        return make_list(std::move(out));
    }
    if (name == "startswith" || name == "endswith") {
        const value x = a.get(0, "prefix");
        a.done(1);
        std::vector<value> options = x.is_list() ? x.list()->items : std::vector<value>{x};
        for (const auto& o : options) {
            const std::string& p = need_string(o, "str." + name);
            if (p.size() > s.size()) continue;
            if (name == "startswith" ? s.compare(0, p.size(), p) == 0
                                     : s.compare(s.size() - p.size(), p.size(), p) == 0)
                return value(true);
        }
        return value(false);
    }
    if (name == "upper" || name == "lower") {
        a.done(0);
        return value(map_case(s, name == "upper"));
    }
    if (name == "title") {
        a.done(0);
        return value(py_title(s));
    }
    if (name == "capitalize") {
        a.done(0);
        return value(capitalize(s));
    }
    if (name == "replace") {
        const std::string from = need_string(a.get(0, "old"), "str.replace");
        const std::string to = need_string(a.get(1, "new"), "str.replace");
        const std::int64_t count = need_int(a.get(2, "count", value(std::int64_t{-1})), "str.replace");
        a.done(3);
        return value(replace_all(s, from, to, count));
    }
    if (name == "find" || name == "rfind" || name == "count" || name == "index") {
        const std::string sub = need_string(a.get(0, "sub"), "str." + name);
        a.done(1);
        if (name == "count") {
            if (sub.empty()) return value(static_cast<std::int64_t>(utf8::length(s) + 1));
            std::int64_t n = 0;
            for (std::size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size()))
                ++n;
            return value(n);
        }
        const auto p = name == "rfind" ? s.rfind(sub) : s.find(sub);
        if (p == std::string::npos) {
            if (name == "index") eval_fail("substring not found");
            return value(std::int64_t{-1});
        }
        return value(static_cast<std::int64_t>(utf8::length(std::string_view(s).substr(0, p))));
    }
    if (name == "join") {
        const value items = a.get(0, "iterable");
        a.done(1);
        std::string out;
        bool first = true;
        for (const auto& x : iterate(items)) {
            if (!first) out += s;
            out += need_string(x, "str.join");
            first = false;
        }
        return value(out);
    }
    if (name == "splitlines") {
        a.done(0);
        std::vector<value> out;
        std::size_t start = 0;
        for (std::size_t i = 0; i < s.size(); ++i) {
            if (s[i] == '\n' || s[i] == '\r') {
                out.emplace_back(s.substr(start, i - start));
                if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
                start = i + 1;
            }
        }
        if (start < s.size()) out.emplace_back(s.substr(start));
        return make_list(std::move(out));
    }
    if (name == "isdigit" || name == "isalpha" || name == "isspace" || name == "islower" || name == "isupper" ||
        name == "isalnum") {
        a.done(0);
        if (s.empty()) return value(false);
        bool any_cased = false;
        for (std::size_t i = 0; i < s.size();) {
            const char32_t c = utf8::next(s, i);
            const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
            const bool letter = cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO;
            const bool digit = cat == UTF8PROC_CATEGORY_ND;
            if (name == "isdigit" && !digit) return value(false);
            if (name == "isalpha" && !letter) return value(false);
            if (name == "isalnum" && !letter && !digit) return value(false);
            if (name == "isspace" && !utf8::is_space(c)) return value(false);
            if (name == "islower" && (cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LT)) return value(false);
            if (name == "isupper" && (cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT)) return value(false);
            if (cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT)
                any_cased = true;
        }
        if (name == "islower" || name == "isupper") return value(any_cased);
        return value(true);
    }
    eval_fail("'str' object has no method '" + name + "'");
}

inline bool is_string_method(std::string_view n) {
    static const std::string_view names[] = {"strip",    "lstrip",  "rstrip",  "split",   "rsplit",     "startswith",
                                             "endswith", "upper",   "lower",   "title",   "capitalize", "replace",
                                             "find",     "rfind",   "count",   "index",   "join",       "splitlines",
                                             "isdigit",  "isalpha", "isspace", "islower", "isupper",    "isalnum"};
    return std::find(std::begin(names), std::end(names), n) != std::end(names);
}

inline value dict_method(const dict_ptr& d, const std::string& name, std::vector<value>& args, kwargs_t& kwargs) {
    arg_reader a{"dict." + name, args, kwargs};
    if (name == "items" || name == "keys" || name == "values") {
        a.done(0);
        std::vector<value> out;
        for (const auto& [k, v] : d->items) {
            if (name == "items")
                out.push_back(make_list({value(k), v}, true));
            else
                out.push_back(name == "keys" ? value(k) : v);
        }
        return make_list(std::move(out));
    }
    if (name == "get") {
        const value key = a.get(0, "key");
        const value def = a.get(1, "default", value(none_t{}));
        a.done(2);
        if (!key.is_string()) return def;
        const value* v = d->find(key.str_ref());
        return v ? *v : def;
    }
    eval_fail("'dict' object has no method '" + name + "'");
}

} // namespace detail

class interpreter {
public:
    explicit interpreter(std::string name) : name_(std::move(name)) {}

    // Renders `body` with `globals` as the outermost scope.
    std::string render(const body_t& body, scope& globals) {
        std::string out;
        if (exec(body, globals, out) != flow::normal) fail(name_ + ": 'break' or 'continue' outside a for loop");
        return out;
    }

private:
    enum class flow { normal, break_, continue_ };
    std::string name_;
    int depth_ = 0;                    // nested exec/eval calls now on the stack
    std::int64_t loop_iterations_ = 0; // for-loop iterations of this render so far

    // One level of the interpreter's recursion: a self-recursive macro or `not not ... 1` must be an error.
    struct nest {
        interpreter& in;
        explicit nest(interpreter& owner) : in(owner) {
            if (++in.depth_ > limits::max_call_depth)
                eval_fail("evaluation nested deeper than the limit of " + std::to_string(limits::max_call_depth) +
                          " levels (recursive macro?)");
        }
        ~nest() { --in.depth_; }
        nest(const nest&) = delete;
        nest& operator=(const nest&) = delete;
    };
    static void check_output(const std::string& out) { check_output_size(out.size(), "template output"); }

    [[noreturn]] void error_at(position p, const std::string& m) const { fail_at(name_, p, m); }

    // ---- statements ------------------------------------------------------------------------------------------

    flow exec(const body_t& body, scope& s, std::string& out) {
        for (const auto& st : body) {
            const flow f = exec(*st, s, out);
            if (f != flow::normal) return f;
        }
        return flow::normal;
    }

    flow exec(const stmt& st, scope& s, std::string& out) {
        try {
            const nest guard(*this);
            const flow f = exec_stmt(st, s, out);
            check_output(out);
            return f;
        } catch (const eval_error& e) {
            error_at(st.pos, e.what());
        }
    }

    flow exec_stmt(const stmt& st, scope& s, std::string& out) {
        switch (st.kind) {
        case stmt_kind::text:
            out += st.text;
            return flow::normal;
        case stmt_kind::output:
            out += to_str(eval(*st.e, s));
            return flow::normal;
        case stmt_kind::if_:
            for (const auto& [test, body] : st.branches)
                if (truthy(eval(*test, s))) return exec(body, s, out);
            return exec(st.else_body, s, out);
        case stmt_kind::for_:
            return exec_for(st, s, out);
        case stmt_kind::set:
            assign(st, eval(*st.e, s), s);
            return flow::normal;
        case stmt_kind::set_block: {
            std::string captured;
            exec(st.body, s, captured);
            s.set(st.targets[0], value(std::move(captured)));
            return flow::normal;
        }
        case stmt_kind::macro:
            s.set(st.text, make_macro(st, s));
            return flow::normal;
        case stmt_kind::break_:
            return flow::break_;
        case stmt_kind::continue_:
            return flow::continue_;
        }
        return flow::normal;
    }

    void bind(const std::vector<std::string>& targets, const value& v, scope& s, position p) {
        if (targets.size() == 1) {
            s.set(targets[0], v);
            return;
        }
        std::vector<value> items;
        try {
            items = detail::iterate(v);
        } catch (const eval_error& e) {
            error_at(p, std::string("cannot unpack: ") + e.what());
        }
        if (items.size() != targets.size())
            error_at(p, "cannot unpack " + std::to_string(items.size()) + " values into " +
                            std::to_string(targets.size()) + " names");
        for (std::size_t i = 0; i < targets.size(); ++i)
            s.set(targets[i], items[i]);
    }

    void assign(const stmt& st, value v, scope& s) {
        if (st.text.empty()) {
            bind(st.targets, v, s, st.pos);
            return;
        }
        const value* obj = s.find(st.targets[0]);
        if (!obj || !obj->is_dict() || obj->dict()->kind != dict_kind::namespace_)
            error_at(st.pos, "cannot assign attribute '" + st.text + "' on '" + st.targets[0] +
                                 "': only namespace() objects take attribute assignment");
        obj->dict()->set(st.text, std::move(v));
    }

    flow exec_for(const stmt& st, scope& s, std::string& out) {
        std::vector<value> items;
        {
            const value seq = eval(*st.e, s);
            try {
                items = detail::iterate(seq);
            } catch (const eval_error& e) {
                error_at(st.e->pos, e.what());
            }
        }
        if (st.cond) {
            std::vector<value> kept;
            for (auto& item : items) {
                scope tmp{{}, &s};
                bind(st.targets, item, tmp, st.pos);
                if (truthy(eval(*st.cond, tmp))) kept.push_back(std::move(item));
            }
            items = std::move(kept);
        }
        const auto n = static_cast<std::int64_t>(items.size());
        if (n == 0) {
            scope inner{{}, &s};
            exec(st.else_body, inner, out);
            return flow::normal;
        }
        for (std::int64_t i = 0; i < n; ++i) {
            if (++loop_iterations_ > limits::max_loop_iterations)
                error_at(st.pos, "more than " + std::to_string(limits::max_loop_iterations) +
                                     " loop iterations in one render (the loop limit)");
            scope inner{{}, &s};
            bind(st.targets, items[static_cast<std::size_t>(i)], inner, st.pos);
            value loop = make_dict(dict_kind::loop);
            auto& d = *loop.dict();
            d.items = {{"index0", value(i)},
                       {"index", value(i + 1)},
                       {"revindex0", value(n - i - 1)},
                       {"revindex", value(n - i)},
                       {"first", value(i == 0)},
                       {"last", value(i == n - 1)},
                       {"length", value(n)},
                       {"depth", value(std::int64_t{1})},
                       {"depth0", value(std::int64_t{0})},
                       {"previtem", i > 0 ? items[static_cast<std::size_t>(i - 1)]
                                          : value(undefined_t{"there is no previous item"})},
                       {"nextitem", i + 1 < n ? items[static_cast<std::size_t>(i + 1)]
                                              : value(undefined_t{"there is no next item"})},
                       {"cycle", make_callable("loop.cycle", [i](std::vector<value>& args, kwargs_t&) {
                            if (args.empty()) eval_fail("no items for cycling given");
                            return args[static_cast<std::size_t>(i) % args.size()];
                        })}};
            inner.set("loop", std::move(loop));
            const flow f = exec(st.body, inner, out);
            if (f == flow::break_) break;
        }
        return flow::normal;
    }

    value make_macro(const stmt& st, scope& defining) {
        const stmt* m = &st;
        const scope* closure = &defining;
        return make_callable(st.text, [this, m, closure](std::vector<value>& args, kwargs_t& kwargs) {
            if (args.size() > m->params.size())
                eval_fail("macro '" + m->text + "' takes " + std::to_string(m->params.size()) + " arguments, " +
                          std::to_string(args.size()) + " given");
            scope inner{{}, closure};
            std::size_t used = 0;
            for (std::size_t i = 0; i < m->params.size(); ++i) {
                const auto& [pname, def] = m->params[i];
                const value* kw = nullptr;
                for (auto& [k, v] : kwargs)
                    if (k == pname) kw = &v;
                if (kw) ++used;
                if (i < args.size())
                    inner.set(pname, args[i]);
                else if (kw)
                    inner.set(pname, *kw);
                else if (def)
                    inner.set(pname, eval(*def, inner));
                else
                    inner.set(pname, value(undefined_t{"'" + pname + "' is undefined (macro argument not given)"}));
            }
            if (used != kwargs.size()) eval_fail("macro '" + m->text + "' got an unexpected keyword argument");
            std::string out;
            exec(m->body, inner, out);
            return value(std::move(out));
        });
    }

    // ---- expressions -----------------------------------------------------------------------------------------

    value eval(const expr& e, const scope& s) {
        try {
            const nest guard(*this);
            value v = eval_inner(e, s);
            if (v.is_string()) check_output_size(v.str_ref().size(), "string");
            return v;
        } catch (const eval_error& err) {
            error_at(e.pos, err.what());
        }
    }

    value eval_inner(const expr& e, const scope& s) {
        switch (e.kind) {
        case expr_kind::literal:
            return e.literal;
        case expr_kind::name: {
            const value* v = s.find(e.name);
            return v ? *v : value(undefined_t{"'" + e.name + "' is undefined"});
        }
        case expr_kind::list:
        case expr_kind::tuple: {
            std::vector<value> items;
            for (const auto& x : e.args)
                items.push_back(eval(*x, s));
            return make_list(std::move(items), e.kind == expr_kind::tuple);
        }
        case expr_kind::dict: {
            value d = make_dict();
            for (std::size_t i = 0; i + 1 < e.args.size(); i += 2) {
                const value k = eval(*e.args[i], s);
                if (!k.is_string()) error_at(e.args[i]->pos, "dict keys must be strings, got " + detail::py_type(k));
                d.dict()->set(k.str_ref(), eval(*e.args[i + 1], s));
            }
            return d;
        }
        case expr_kind::attr:
            return get_attr(eval(*e.a, s), e.name);
        case expr_kind::item:
            return get_item(eval(*e.a, s), eval(*e.b, s));
        case expr_kind::slice: {
            const value obj = eval(*e.a, s);
            value parts[3];
            for (int i = 0; i < 3; ++i)
                parts[i] = e.args[i] ? eval(*e.args[i], s) : value(none_t{});
            return slice(obj, parts[0], parts[1], parts[2]);
        }
        case expr_kind::call: {
            value callee = eval(*e.a, s);
            auto [args, kwargs] = eval_args(e, s);
            if (callee.is_undefined()) detail::fail_undefined(callee);
            if (!callee.is_callable()) eval_fail("'" + detail::py_type(callee) + "' object is not callable");
            return callee.callable()->fn(args, kwargs);
        }
        case expr_kind::filter: {
            value x = eval(*e.a, s);
            auto [args, kwargs] = eval_args(e, s);
            return apply_filter(e.name, std::move(x), args, kwargs);
        }
        case expr_kind::test: {
            value x = eval(*e.a, s);
            auto [args, kwargs] = eval_args(e, s);
            return value(apply_test(e.name, x, args, kwargs));
        }
        case expr_kind::neg:
        case expr_kind::pos: {
            const value x = eval(*e.a, s);
            detail::require_defined(x);
            if (!x.is_number())
                eval_fail("bad operand type for unary " + std::string(e.kind == expr_kind::neg ? "-" : "+") + ": '" +
                          detail::py_type(x) + "'");
            if (e.kind == expr_kind::pos) return x.is_bool() ? value(x.as_int()) : x;
            if (x.is_float()) return value(-x.as_double());
            if (x.as_int() == INT64_MIN) eval_fail("integer overflow (integers are 64-bit here)");
            return value(-x.as_int());
        }
        case expr_kind::binary:
            return binary(e.name, eval(*e.a, s), eval(*e.b, s));
        case expr_kind::concat:
            return value(to_str(eval(*e.a, s)) + to_str(eval(*e.b, s)));
        case expr_kind::logic_and: {
            value a = eval(*e.a, s);
            return truthy(a) ? eval(*e.b, s) : a;
        }
        case expr_kind::logic_or: {
            value a = eval(*e.a, s);
            return truthy(a) ? a : eval(*e.b, s);
        }
        case expr_kind::logic_not:
            return value(!truthy(eval(*e.a, s)));
        case expr_kind::compare: {
            value left = eval(*e.a, s);
            for (std::size_t i = 0; i < e.ops.size(); ++i) {
                value right = eval(*e.args[i], s);
                if (!compare_op(e.ops[i], left, right)) return value(false);
                left = std::move(right);
            }
            return value(true);
        }
        case expr_kind::cond:
            if (truthy(eval(*e.b, s))) return eval(*e.a, s);
            return e.c ? eval(*e.c, s)
                       : value(undefined_t{"the inline if expression evaluated to false and has no else"});
        }
        eval_fail("unknown expression");
    }

    std::pair<std::vector<value>, kwargs_t> eval_args(const expr& e, const scope& s) {
        std::vector<value> args;
        kwargs_t kwargs;
        for (const auto& a : e.args)
            args.push_back(eval(*a, s));
        for (const auto& [k, a] : e.kwargs)
            kwargs.emplace_back(k, eval(*a, s));
        return {std::move(args), std::move(kwargs)};
    }

    static bool compare_op(const std::string& op, const value& a, const value& b) {
        if (op == "==") return equal(a, b);
        if (op == "!=") return !equal(a, b);
        if (op == "in") return detail::contains(b, a);
        if (op == "not in") return !detail::contains(b, a);
        detail::require_defined(a);
        detail::require_defined(b);
        const int c = compare(a, b);
        if (op == "<") return c < 0;
        if (op == ">") return c > 0;
        if (op == "<=") return c <= 0;
        return c >= 0;
    }

    static value binary(const std::string& op, const value& a, const value& b) {
        detail::require_defined(a);
        detail::require_defined(b);
        auto unsupported = [&]() -> value {
            eval_fail("unsupported operand type(s) for " + op + ": '" + detail::py_type(a) + "' and '" +
                      detail::py_type(b) + "'");
        };
        if (op == "+") {
            if (a.is_string() && b.is_string()) return value(a.str_ref() + b.str_ref());
            if (a.is_list() && b.is_list() && a.list()->tuple == b.list()->tuple) {
                std::vector<value> items = a.list()->items;
                items.insert(items.end(), b.list()->items.begin(), b.list()->items.end());
                return make_list(std::move(items), a.list()->tuple);
            }
            if (a.is_string() || b.is_string()) {
                if (a.is_string()) eval_fail("can only concatenate str (not \"" + detail::py_type(b) + "\") to str");
                return unsupported();
            }
        }
        if (op == "*") {
            const value* seq = a.is_string() || a.is_list() ? &a : b.is_string() || b.is_list() ? &b : nullptr;
            const value* count = seq == &a ? &b : &a;
            if (seq) {
                if (!count->is_int() && !count->is_bool()) return unsupported();
                const std::int64_t n = std::max<std::int64_t>(0, count->as_int());
                const std::size_t unit = seq->is_string() ? seq->str_ref().size() : seq->list()->items.size();
                if (unit != 0 && static_cast<std::uint64_t>(n) > (std::uint64_t{1} << 26) / unit)
                    eval_fail("repetition result too large");
                if (seq->is_string()) {
                    std::string out;
                    for (std::int64_t i = 0; i < n; ++i)
                        out += seq->str_ref();
                    return value(out);
                }
                std::vector<value> items;
                for (std::int64_t i = 0; i < n; ++i)
                    items.insert(items.end(), seq->list()->items.begin(), seq->list()->items.end());
                return make_list(std::move(items), seq->list()->tuple);
            }
        }
        if (!a.is_number() || !b.is_number()) return unsupported();
        const bool ints = !a.is_float() && !b.is_float();
        if (op == "/") {
            if (b.as_double() == 0) eval_fail("division by zero");
            return value(a.as_double() / b.as_double());
        }
        if (ints) {
            const std::int64_t x = a.as_int(), y = b.as_int();
            std::int64_t r = 0;
            auto overflow = []() -> value { eval_fail("integer overflow (integers are 64-bit here)"); };
            if (op == "+") return __builtin_add_overflow(x, y, &r) ? overflow() : value(r);
            if (op == "-") return __builtin_sub_overflow(x, y, &r) ? overflow() : value(r);
            if (op == "*") return __builtin_mul_overflow(x, y, &r) ? overflow() : value(r);
            if (op == "//" || op == "%") {
                if (y == 0) eval_fail("integer division or modulo by zero");
                if (y == -1)
                    return op == "%"                                        ? value(std::int64_t{0})
                           : __builtin_sub_overflow(std::int64_t{0}, x, &r) ? overflow()
                                                                            : value(r);
                std::int64_t q = x / y;
                r = x % y;
                if (r != 0 && ((r < 0) != (y < 0))) {
                    --q;
                    r += y;
                }
                return value(op == "//" ? q : r);
            }
            if (op == "**") {
                if (y < 0) return value(std::pow(static_cast<double>(x), static_cast<double>(y)));
                if (x == 0 || x == 1) return value(y == 0 ? std::int64_t{1} : x);
                if (x == -1) return value(y % 2 ? std::int64_t{-1} : std::int64_t{1});
                r = 1;
                for (std::int64_t i = 0; i < y; ++i)
                    if (__builtin_mul_overflow(r, x, &r)) return overflow();
                return value(r);
            }
        } else {
            const double x = a.as_double(), y = b.as_double();
            if (op == "+") return value(x + y);
            if (op == "-") return value(x - y);
            if (op == "*") return value(x * y);
            if (op == "//" || op == "%") {
                if (y == 0) eval_fail("float division or modulo by zero");
                if (op == "//") return value(std::floor(x / y));
                double r = std::fmod(x, y);
                if (r != 0 && ((r < 0) != (y < 0))) r += y;
                return value(r);
            }
            if (op == "**") return value(std::pow(x, y));
        }
        return unsupported();
    }

    // ---- attribute and item access -----------------------------------------------------------------------------

    static value bound(std::string name, std::function<value(std::vector<value>&, kwargs_t&)> fn) {
        return make_callable(std::move(name), std::move(fn));
    }

    static value get_attr(const value& obj, const std::string& name) {
        if (obj.is_undefined()) detail::fail_undefined(obj);
        if (obj.is_dict()) {
            const auto& d = obj.dict();
            if (d->kind == dict_kind::plain && (name == "items" || name == "keys" || name == "values" || name == "get"))
                return bound("dict." + name, [d, name](std::vector<value>& args, kwargs_t& kwargs) {
                    return detail::dict_method(d, name, args, kwargs);
                });
            if (const value* v = d->find(name)) return *v;
            return value(undefined_t{"'" + (d->kind == dict_kind::plain ? std::string("dict object") : type_name(obj)) +
                                     "' has no attribute '" + name + "'"});
        }
        if (obj.is_string() && detail::is_string_method(name)) {
            std::string s = obj.str_ref();
            return bound("str." + name, [s = std::move(s), name](std::vector<value>& args, kwargs_t& kwargs) {
                return detail::string_method(s, name, args, kwargs);
            });
        }
        return value(undefined_t{"'" + detail::py_type(obj) + " object' has no attribute '" + name + "'"});
    }

    static value get_item(const value& obj, const value& key) {
        if (obj.is_undefined()) detail::fail_undefined(obj);
        if (obj.is_dict()) {
            if (key.is_string()) {
                if (const value* v = obj.dict()->find(key.str_ref())) return *v;
                return value(undefined_t{"'dict object' has no attribute '" + key.str_ref() + "'"});
            }
            return value(undefined_t{"'dict object' has no item " + repr(key)});
        }
        if ((obj.is_list() || obj.is_string()) && (key.is_int() || key.is_bool())) {
            std::int64_t i = key.as_int();
            if (obj.is_list()) {
                const auto& items = obj.list()->items;
                const auto n = static_cast<std::int64_t>(items.size());
                if (i < 0) i += n;
                if (i < 0 || i >= n) return value(undefined_t{"list index " + repr(key) + " out of range"});
                return items[static_cast<std::size_t>(i)];
            }
            const auto cps = utf8::decode(obj.str_ref());
            const auto n = static_cast<std::int64_t>(cps.size());
            if (i < 0) i += n;
            if (i < 0 || i >= n) return value(undefined_t{"string index " + repr(key) + " out of range"});
            std::string out;
            utf8::append(out, cps[static_cast<std::size_t>(i)]);
            return value(out);
        }
        if (key.is_string()) return get_attr(obj, key.str_ref());
        return value(undefined_t{"'" + detail::py_type(obj) + " object' has no item " + repr(key)});
    }

    static value slice(const value& obj, const value& start, const value& stop, const value& step) {
        if (obj.is_undefined()) detail::fail_undefined(obj);
        if (obj.is_list()) {
            const auto& items = obj.list()->items;
            std::vector<value> out;
            for (auto i : detail::slice_indices(static_cast<std::int64_t>(items.size()), start, stop, step))
                out.push_back(items[i]);
            return make_list(std::move(out), obj.list()->tuple);
        }
        if (obj.is_string()) {
            const auto cps = utf8::decode(obj.str_ref());
            std::string out;
            for (auto i : detail::slice_indices(static_cast<std::int64_t>(cps.size()), start, stop, step))
                utf8::append(out, cps[i]);
            return value(out);
        }
        eval_fail("'" + detail::py_type(obj) + "' object is not subscriptable");
    }

    // `a.b.c` or an integer, as map/selectattr/sort take them.
    static value get_path(const value& obj, const value& path) {
        if (path.is_int()) return get_item(obj, path);
        const std::string& p = detail::need_string(path, "attribute");
        value cur = obj;
        std::size_t start = 0;
        while (true) {
            const auto dot = p.find('.', start);
            const std::string part = p.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
            const bool digits =
                !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
            cur = digits ? get_item(cur, value(static_cast<std::int64_t>(std::strtoll(part.c_str(), nullptr, 10))))
                         : get_item(cur, value(part));
            if (dot == std::string::npos) return cur;
            start = dot + 1;
        }
    }

    // ---- filters -----------------------------------------------------------------------------------------------

    static value sort_key(const value& v, bool case_sensitive) {
        if (!case_sensitive && v.is_string()) return value(detail::map_case(v.str_ref(), false));
        return v;
    }

    value apply_filter(const std::string& name, value x, std::vector<value>& args, kwargs_t& kwargs) {
        detail::arg_reader a{name, args, kwargs};
        auto str_arg = [&](std::size_t i, std::string_view n, const char* def) {
            value v = a.get(i, n, value(def));
            return detail::need_string(v, name);
        };
        if (name == "length" || name == "count") {
            a.done(0);
            return value(detail::length(x));
        }
        if (name == "trim") {
            const value chars = a.get(0, "chars", value(none_t{}));
            a.done(1);
            const std::string s = to_str(x);
            if (chars.is_none()) return value(utf8::strip(s, true, true));
            return value(utf8::strip(s, true, true, &detail::need_string(chars, "trim")));
        }
        if (name == "tojson") {
            tojson_options o;
            const value indent = a.get(0, "indent", value(none_t{}));
            const value ensure_ascii = a.get(1, "ensure_ascii", value(false));
            const value separators = a.get(2, "separators", value(none_t{}));
            const value sort_keys = a.get(3, "sort_keys", value(false));
            a.done(4);
            if (indent.is_int()) {
                check_output_size(static_cast<std::size_t>(std::max<std::int64_t>(0, indent.as_int())),
                                  "tojson indent");
                o.indent = static_cast<int>(indent.as_int());
                o.indent_string = std::string(static_cast<std::size_t>(std::max(0, o.indent)), ' ');
            } else if (indent.is_string()) {
                o.indent = 1;
                o.indent_string = indent.str_ref();
            } else if (!indent.is_none()) {
                eval_fail("tojson: indent must be an integer or a string");
            }
            if (o.indent >= 0) o.item_separator = ",";
            if (separators.is_list()) {
                const auto& sep = separators.list()->items;
                if (sep.size() != 2) eval_fail("tojson: separators must be a pair of strings");
                o.item_separator = detail::need_string(sep[0], "tojson separators");
                o.key_separator = detail::need_string(sep[1], "tojson separators");
            }
            o.ensure_ascii = truthy(ensure_ascii);
            o.sort_keys = truthy(sort_keys);
            std::string out;
            tojson(x, out, o);
            return value(out);
        }
        if (name == "lower" || name == "upper") {
            a.done(0);
            return value(detail::map_case(to_str(x), name == "upper"));
        }
        if (name == "capitalize") {
            a.done(0);
            return value(detail::capitalize(to_str(x)));
        }
        if (name == "title") {
            a.done(0);
            return value(detail::jinja_title(to_str(x)));
        }
        if (name == "default" || name == "d") {
            const value def = a.get(0, "default_value", value(""));
            const bool boolean = truthy(a.get(1, "boolean", value(false)));
            a.done(2);
            if (x.is_undefined() || (boolean && !truthy(x))) return def;
            return x;
        }
        if (name == "join") {
            const std::string sep = str_arg(0, "d", "");
            const value attribute = a.get(1, "attribute", value(none_t{}));
            a.done(2);
            std::string out;
            bool first = true;
            for (const auto& item : detail::iterate(x)) {
                if (!first) out += sep;
                out += to_str(attribute.is_none() ? item : get_path(item, attribute));
                first = false;
            }
            return value(out);
        }
        if (name == "items") {
            a.done(0);
            if (x.is_undefined()) return make_list();
            if (!x.is_dict()) eval_fail("items: can only get item pairs from a mapping, not " + detail::py_type(x));
            std::vector<value> no_args;
            kwargs_t no_kwargs;
            return detail::dict_method(x.dict(), "items", no_args, no_kwargs);
        }
        if (name == "first" || name == "last") {
            a.done(0);
            auto items = detail::iterate(x);
            if (items.empty()) return value(undefined_t{"no " + name + " item, sequence was empty"});
            return name == "first" ? items.front() : items.back();
        }
        if (name == "list") {
            a.done(0);
            return make_list(detail::iterate(x));
        }
        if (name == "reverse") {
            a.done(0);
            if (x.is_string()) {
                auto cps = utf8::decode(x.str_ref());
                std::reverse(cps.begin(), cps.end());
                return value(utf8::encode(cps));
            }
            auto items = detail::iterate(x);
            std::reverse(items.begin(), items.end());
            return make_list(std::move(items));
        }
        if (name == "string") {
            a.done(0);
            return value(to_str(x));
        }
        if (name == "safe" || name == "e" || name == "escape") {
            a.done(0);
            if (name == "safe") return x;
            std::string out;
            for (char c : to_str(x)) {
                switch (c) {
                case '&':
                    out += "&amp;";
                    break;
                case '<':
                    out += "&lt;";
                    break;
                case '>':
                    out += "&gt;";
                    break;
                case '"':
                    out += "&#34;";
                    break;
                case '\'':
                    out += "&#39;";
                    break;
                default:
                    out += c;
                }
            }
            return value(out);
        }
        if (name == "replace") {
            const std::string from = detail::need_string(a.get(0, "old"), "replace");
            const std::string to = detail::need_string(a.get(1, "new"), "replace");
            const value count = a.get(2, "count", value(none_t{}));
            a.done(3);
            return value(
                detail::replace_all(to_str(x), from, to, count.is_none() ? -1 : detail::need_int(count, "replace")));
        }
        if (name == "int") {
            const value def = a.get(0, "default", value(std::int64_t{0}));
            a.done(2);
            if (x.is_int() || x.is_bool()) return value(x.as_int());
            if (x.is_float()) return value(static_cast<std::int64_t>(std::trunc(x.as_double())));
            if (x.is_string()) {
                const std::string t = utf8::strip(x.str_ref(), true, true);
                try {
                    std::size_t used = 0;
                    const long long v = std::stoll(t, &used);
                    if (used == t.size()) return value(static_cast<std::int64_t>(v));
                    const double d = std::stod(t, &used);
                    if (used == t.size()) return value(static_cast<std::int64_t>(std::trunc(d)));
                } catch (const std::exception&) {
                }
            }
            return def;
        }
        if (name == "float") {
            const value def = a.get(0, "default", value(0.0));
            a.done(1);
            if (x.is_number()) return value(x.as_double());
            if (x.is_string()) {
                const std::string t = utf8::strip(x.str_ref(), true, true);
                try {
                    std::size_t used = 0;
                    const double d = std::stod(t, &used);
                    if (used == t.size()) return value(d);
                } catch (const std::exception&) {
                }
            }
            return def;
        }
        if (name == "abs") {
            a.done(0);
            detail::require_defined(x);
            if (x.is_float()) return value(std::fabs(x.as_double()));
            if (x.is_number() && x.as_int() != INT64_MIN) return value(x.as_int() < 0 ? -x.as_int() : x.as_int());
            eval_fail("bad operand type for abs(): '" + detail::py_type(x) + "'");
        }
        if (name == "round") {
            const std::int64_t precision = detail::need_int(a.get(0, "precision", value(std::int64_t{0})), "round");
            const std::string method = str_arg(1, "method", "common");
            a.done(2);
            if (!x.is_number()) eval_fail("round: expects a number");
            const double scale = std::pow(10.0, static_cast<double>(precision));
            const double v = x.as_double() * scale;
            double r = method == "ceil" ? std::ceil(v) : method == "floor" ? std::floor(v) : std::nearbyint(v);
            return value(r / scale);
        }
        if (name == "map") {
            const value attribute = a.get(9, "attribute", value(none_t{}));
            std::vector<value> out;
            if (!attribute.is_none()) {
                const value def = a.get(9, "default", value());
                a.done(0);
                for (const auto& item : detail::iterate(x)) {
                    value v = get_path(item, attribute);
                    out.push_back(v.is_undefined() && !def.is_undefined() ? def : v);
                }
                return make_list(std::move(out));
            }
            if (args.empty()) eval_fail("map: needs a filter name or attribute=");
            const std::string filter = detail::need_string(args[0], "map");
            const auto& known = known_filters();
            if (std::find(known.begin(), known.end(), filter) == known.end())
                eval_fail("unknown filter '" + filter + "'");
            for (const auto& item : detail::iterate(x)) {
                std::vector<value> rest(args.begin() + 1, args.end());
                kwargs_t kw = kwargs;
                out.push_back(apply_filter(filter, item, rest, kw));
            }
            return make_list(std::move(out));
        }
        if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
            const bool by_attr = name == "selectattr" || name == "rejectattr";
            const bool keep_if = name == "select" || name == "selectattr";
            std::size_t k = 0;
            value attribute;
            if (by_attr) {
                if (args.empty()) eval_fail(name + ": needs an attribute name");
                attribute = args[k++];
            }
            std::string test;
            if (k < args.size()) {
                test = detail::need_string(args[k++], name);
                const auto& known = known_tests();
                if (std::find(known.begin(), known.end(), test) == known.end())
                    eval_fail("unknown test '" + test + "'");
            }
            std::vector<value> out;
            for (const auto& item : detail::iterate(x)) {
                const value v = by_attr ? get_path(item, attribute) : item;
                bool ok;
                if (test.empty()) {
                    ok = truthy(v);
                } else {
                    std::vector<value> rest(args.begin() + static_cast<std::ptrdiff_t>(k), args.end());
                    kwargs_t kw = kwargs;
                    ok = apply_test(test, v, rest, kw);
                }
                if (ok == keep_if) out.push_back(item);
            }
            return make_list(std::move(out));
        }
        if (name == "sort" || name == "unique" || name == "min" || name == "max" || name == "dictsort") {
            const bool reverse = name == "sort"       ? truthy(a.get(0, "reverse", value(false)))
                                 : name == "dictsort" ? truthy(a.get(2, "reverse", value(false)))
                                                      : false;
            const bool case_sensitive = truthy(a.get(name == "sort" ? 1 : 0, "case_sensitive", value(false)));
            const value attribute =
                name == "dictsort" ? value(none_t{}) : a.get(name == "sort" ? 2 : 1, "attribute", value(none_t{}));
            std::string by = "key";
            if (name == "dictsort") by = str_arg(1, "by", "key");
            a.done(name == "sort" ? 3 : name == "dictsort" ? 3 : 2);
            std::vector<value> items;
            if (name == "dictsort") {
                if (!x.is_dict()) eval_fail("dictsort: expects a dict");
                for (const auto& [kk, vv] : x.dict()->items)
                    items.push_back(make_list({value(kk), vv}, true));
            } else {
                items = detail::iterate(x);
            }
            auto key = [&](const value& v) {
                value k = v;
                if (name == "dictsort")
                    k = v.list()->items[by == "value" ? 1 : 0];
                else if (!attribute.is_none())
                    k = get_path(v, attribute);
                return sort_key(k, case_sensitive);
            };
            if (name == "unique") {
                std::vector<value> out, seen;
                for (const auto& v : items) {
                    const value k = key(v);
                    if (std::none_of(seen.begin(), seen.end(), [&](const value& s) { return equal(s, k); })) {
                        seen.push_back(k);
                        out.push_back(v);
                    }
                }
                return make_list(std::move(out));
            }
            if (name == "min" || name == "max") {
                if (items.empty()) return value(undefined_t{"no " + name + " item, sequence was empty"});
                std::size_t best = 0;
                for (std::size_t i = 1; i < items.size(); ++i) {
                    const int c = compare(key(items[i]), key(items[best]));
                    if (name == "min" ? c < 0 : c > 0) best = i;
                }
                return items[best];
            }
            std::stable_sort(items.begin(), items.end(), [&](const value& p, const value& q) {
                return reverse ? compare(key(q), key(p)) < 0 : compare(key(p), key(q)) < 0;
            });
            return make_list(std::move(items));
        }
        if (name == "sum") {
            const value attribute = a.get(0, "attribute", value(none_t{}));
            value total = a.get(1, "start", value(std::int64_t{0}));
            a.done(2);
            for (const auto& item : detail::iterate(x))
                total = binary("+", total, attribute.is_none() ? item : get_path(item, attribute));
            return total;
        }
        if (name == "attr") {
            const std::string n = detail::need_string(a.get(0, "name"), "attr");
            a.done(1);
            return get_attr(x, n);
        }
        if (name == "indent") {
            const value width = a.get(0, "width", value(std::int64_t{4}));
            const bool first = truthy(a.get(1, "first", value(false)));
            const bool blank = truthy(a.get(2, "blank", value(false)));
            a.done(3);
            if (!width.is_string())
                check_output_size(
                    static_cast<std::size_t>(std::max<std::int64_t>(0, detail::need_int(width, "indent"))),
                    "indent width");
            const std::string ind =
                width.is_string()
                    ? width.str_ref()
                    : std::string(
                          static_cast<std::size_t>(std::max<std::int64_t>(0, detail::need_int(width, "indent"))), ' ');
            std::vector<value> no_args;
            kwargs_t no_kwargs;
            const value lines_v = detail::string_method(to_str(x) + "\n", "splitlines", no_args, no_kwargs);
            const auto& lines = lines_v.list()->items;
            check_output_size(to_str(x).size() + (lines.size() + 1) * ind.size(), "indent");
            std::string rv;
            if (blank) {
                for (std::size_t i = 0; i < lines.size(); ++i)
                    rv += (i ? "\n" + ind : "") + lines[i].str_ref();
            } else if (!lines.empty()) {
                rv = lines[0].str_ref();
                for (std::size_t i = 1; i < lines.size(); ++i)
                    rv += "\n" + (lines[i].str_ref().empty() ? std::string() : ind) + lines[i].str_ref();
            }
            if (first) rv = ind + rv;
            return value(rv);
        }
        if (name == "wordcount") {
            a.done(0);
            return value(static_cast<std::int64_t>(detail::split(to_str(x), value(none_t{}), -1, false).size()));
        }
        if (name == "format") {
            // printf-style %s / %d / %i / %% only.
            const std::string fmt = detail::need_string(x, "format");
            std::string out;
            std::size_t next_arg = 0;
            for (std::size_t i = 0; i < fmt.size(); ++i) {
                if (fmt[i] != '%' || i + 1 == fmt.size()) {
                    out += fmt[i];
                    continue;
                }
                const char c = fmt[++i];
                if (c == '%') {
                    out += '%';
                    continue;
                }
                if (next_arg >= args.size()) eval_fail("format: not enough arguments for format string");
                const value& v = args[next_arg++];
                if (c == 's')
                    out += to_str(v);
                else if (c == 'd' || c == 'i')
                    out += std::to_string(
                        detail::need_int(v.is_float() ? value(static_cast<std::int64_t>(v.as_double())) : v, "format"));
                else
                    eval_fail(std::string("format: unsupported conversion '%") + c + "'");
            }
            return value(out);
        }
        eval_fail("filter '" + name + "' is not implemented");
    }

    // ---- tests -------------------------------------------------------------------------------------------------

    bool apply_test(const std::string& name, const value& x, std::vector<value>& args, kwargs_t& kwargs) {
        detail::arg_reader a{name, args, kwargs};
        auto arg0 = [&]() {
            value v = a.get(0, "other");
            a.done(1);
            return v;
        };
        if (name == "defined") return !x.is_undefined();
        if (name == "undefined") return x.is_undefined();
        if (name == "none") return x.is_none();
        if (name == "boolean") return x.is_bool();
        if (name == "true") return x.is_bool() && x.as_bool();
        if (name == "false") return x.is_bool() && !x.as_bool();
        if (name == "integer") return x.is_int();
        if (name == "float") return x.is_float();
        if (name == "number") return x.is_number();
        if (name == "string") return x.is_string();
        if (name == "mapping") return x.is_dict() && x.dict()->kind == dict_kind::plain;
        if (name == "iterable")
            return x.is_undefined() || x.is_string() || x.is_list() ||
                   (x.is_dict() && x.dict()->kind == dict_kind::plain);
        if (name == "sequence") return x.is_undefined() || x.is_string() || x.is_list() || x.is_dict();
        if (name == "callable") return x.is_callable();
        if (name == "escaped") return false;
        if (name == "lower" || name == "upper") {
            if (!x.is_string()) return false;
            return detail::map_case(x.str_ref(), name == "upper") == x.str_ref();
        }
        if (name == "odd" || name == "even") {
            const std::int64_t v = detail::need_int(x, name);
            return (((v % 2) + 2) % 2 == 1) == (name == "odd");
        }
        if (name == "divisibleby") {
            const std::int64_t d = detail::need_int(a.get(0, "num"), name);
            a.done(1);
            if (d == 0) eval_fail("integer division or modulo by zero");
            return detail::need_int(x, name) % d == 0;
        }
        if (name == "sameas") {
            const value o = arg0();
            if (x.v.index() != o.v.index()) return false;
            if (x.is_list()) return x.list() == o.list();
            if (x.is_dict()) return x.dict() == o.dict();
            if (x.is_string()) return false;
            return equal(x, o);
        }
        if (name == "eq" || name == "equalto") return equal(x, arg0());
        if (name == "ne") return !equal(x, arg0());
        if (name == "in") return detail::contains(arg0(), x);
        if (name == "lt" || name == "lessthan") return compare_op("<", x, arg0());
        if (name == "le") return compare_op("<=", x, arg0());
        if (name == "gt" || name == "greaterthan") return compare_op(">", x, arg0());
        if (name == "ge") return compare_op(">=", x, arg0());
        if (name == "filter" || name == "test") {
            if (!x.is_string()) return false;
            const auto& known = name == "filter" ? known_filters() : known_tests();
            return std::find(known.begin(), known.end(), x.str_ref()) != known.end();
        }
        eval_fail("test '" + name + "' is not implemented");
    }
};

// The global functions of transformers' chat-template environment.
inline void add_globals(scope& s) {
    s.set("raise_exception", make_callable("raise_exception", [](std::vector<value>& args, kwargs_t&) -> value {
              eval_fail("raise_exception: " + (args.empty() ? std::string() : to_str(args[0])));
          }));
    s.set("range", make_callable("range", [](std::vector<value>& args, kwargs_t&) {
              if (args.empty() || args.size() > 3) eval_fail("range expected 1 to 3 arguments");
              std::int64_t start = 0, stop = 0, step = 1;
              if (args.size() == 1) {
                  stop = detail::need_int(args[0], "range");
              } else {
                  start = detail::need_int(args[0], "range");
                  stop = detail::need_int(args[1], "range");
                  if (args.size() == 3) step = detail::need_int(args[2], "range");
              }
              if (step == 0) eval_fail("range() arg 3 must not be zero");
              const double count = (static_cast<double>(stop) - static_cast<double>(start)) / static_cast<double>(step);
              if (count > double(limits::max_range))
                  eval_fail("range() too large (more than " + std::to_string(limits::max_range) +
                            " items, the limit of jinja2's sandbox)");
              std::vector<value> out;
              for (std::int64_t i = start; step > 0 ? i < stop : i > stop; i += step)
                  out.emplace_back(i);
              return make_list(std::move(out));
          }));
    auto make_mapping = [](dict_kind kind) {
        return [kind](std::vector<value>& args, kwargs_t& kwargs) {
            value d = make_dict(kind);
            if (args.size() > 1) eval_fail("expected at most 1 positional argument");
            if (!args.empty()) {
                if (!args[0].is_dict()) eval_fail("expected a dict as positional argument");
                for (const auto& [k, v] : args[0].dict()->items)
                    d.dict()->set(k, v);
            }
            for (auto& [k, v] : kwargs)
                d.dict()->set(k, v);
            return d;
        };
    };
    s.set("namespace", make_callable("namespace", make_mapping(dict_kind::namespace_)));
    s.set("dict", make_callable("dict", make_mapping(dict_kind::plain)));
    s.set("strftime_now", make_callable("strftime_now", [](std::vector<value>& args, kwargs_t&) {
              if (args.size() != 1) eval_fail("strftime_now expects one format string");
              const std::string& fmt = detail::need_string(args[0], "strftime_now");
              const std::time_t now = std::time(nullptr);
              std::tm tm{};
              localtime_r(&now, &tm);
              char buf[256];
              const std::size_t n = std::strftime(buf, sizeof buf, fmt.c_str(), &tm);
              return value(std::string(buf, n));
          }));
}

} // namespace tl::jinja
