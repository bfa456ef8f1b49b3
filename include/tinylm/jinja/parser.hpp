// tinylm/jinja/parser.hpp: lexer and parser of the Jinja subset that chat templates use.
//
// The lexer follows jinja2's with the settings of transformers' chat-template environment: trim_blocks (the
// first newline after a block or comment tag is dropped), lstrip_blocks (spaces and tabs before a block or
// comment tag at the start of a line are dropped), `-` and `+` whitespace control on every tag, one trailing
// newline of the template dropped, \r\n and \r read as \n. The parser builds a small tree of statements and
// expressions with Jinja's operator precedence. Errors name the line and column (code points, 1-based).
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/jinja/value.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tl::jinja {

struct position {
    int line = 1;
    int column = 1;
};

inline std::string where(const std::string& template_name, position p) {
    return template_name + ", line " + std::to_string(p.line) + ", column " + std::to_string(p.column) + ": ";
}

[[noreturn]] inline void fail_at(const std::string& template_name, position p, const std::string& message) {
    fail(where(template_name, p) + message);
}

// ---- tokens --------------------------------------------------------------------------------------------------

enum class tok { data, var_begin, var_end, block_begin, block_end, name, string, integer, floating, op, eof };

struct token {
    tok type = tok::eof;
    std::string text; // data, name, decoded string, operator
    position pos;
    std::int64_t int_value = 0;
    double float_value = 0;
};

namespace detail {

class lexer {
public:
    lexer(std::string_view source, const std::string& name) : name_(name) {
        // Newlines as jinja2 reads them: \r\n and \r become \n, and one trailing newline is dropped.
        src_.reserve(source.size());
        for (std::size_t i = 0; i < source.size(); ++i) {
            if (source[i] == '\r') {
                src_ += '\n';
                if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
            } else {
                src_ += source[i];
            }
        }
        if (!src_.empty() && src_.back() == '\n') src_.pop_back();
        line_starts_.push_back(0);
        for (std::size_t i = 0; i < src_.size(); ++i)
            if (src_[i] == '\n') line_starts_.push_back(i + 1);
    }

    std::vector<token> run() {
        std::size_t pos = 0;
        while (pos < src_.size()) {
            const std::size_t open = find_tag(pos);
            if (open == std::string::npos) {
                emit_data(pos, src_.substr(pos));
                break;
            }
            const char kind = src_[open + 1];
            const char sign = open + 2 < src_.size() ? src_[open + 2] : '\0';
            const bool has_sign = sign == '-' || sign == '+';
            std::string text = src_.substr(pos, open - pos);
            if (sign == '-') {
                text = utf8::strip(text, false, true);
            } else if (sign != '+' && kind != '{') {
                lstrip_block(text, pos);
            }
            emit_data(pos, std::move(text));
            const std::size_t inner = open + 2 + (has_sign ? 1 : 0);
            if (kind == '#') {
                pos = lex_comment(open, inner);
            } else if (kind == '%' && is_raw(inner)) {
                pos = lex_raw(open, inner);
            } else {
                pos = lex_tag(open, inner, kind == '{');
            }
        }
        token end;
        end.type = tok::eof;
        end.pos = at(src_.size());
        out_.push_back(end);
        return std::move(out_);
    }

private:
    std::string src_;
    const std::string& name_;
    std::vector<std::size_t> line_starts_;
    std::vector<token> out_;

    // The column counts code points from the line start. Tokens come in order, so counting resumes from the last
    // position asked on the same line: a one-line 40 KB template would otherwise cost a scan per token.
    mutable std::size_t last_offset_ = 0;
    mutable int last_column_ = 1;
    position at(std::size_t offset) const {
        const auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), offset);
        const auto line = static_cast<std::size_t>(it - line_starts_.begin());
        const std::size_t start = line_starts_[line - 1];
        std::size_t from = start;
        int col = 1;
        if (last_offset_ >= start && last_offset_ <= offset) from = last_offset_, col = last_column_;
        for (std::size_t i = from; i < offset && i < src_.size(); ++i)
            if ((static_cast<unsigned char>(src_[i]) & 0xC0) != 0x80) ++col;
        last_offset_ = offset;
        last_column_ = col;
        return {static_cast<int>(line), col};
    }

    [[noreturn]] void error(std::size_t offset, const std::string& message) const {
        fail_at(name_, at(offset), message);
    }

    std::size_t find_tag(std::size_t from) const {
        for (std::size_t i = src_.find('{', from); i != std::string::npos && i + 1 < src_.size();
             i = src_.find('{', i + 1)) {
            const char c = src_[i + 1];
            if (c == '{' || c == '%' || c == '#') return i;
        }
        return std::string::npos;
    }

    // lstrip_blocks: whitespace between the start of the line and a block or comment tag goes.
    void lstrip_block(std::string& text, std::size_t text_start) const {
        const auto nl = text.rfind('\n');
        const std::size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
        const bool line_starting = text_start == 0 || src_[text_start - 1] == '\n';
        if (l_pos == 0 && !line_starting) return;
        if (l_pos == text.size()) return;
        const std::string_view rest(text.data() + l_pos, text.size() - l_pos);
        for (std::size_t i = 0; i < rest.size();)
            if (!utf8::is_space(utf8::next(rest, i))) return;
        text.resize(l_pos);
    }

    void emit_data(std::size_t offset, std::string text) {
        if (text.empty()) return;
        token t;
        t.type = tok::data;
        t.text = std::move(text);
        t.pos = at(offset);
        out_.push_back(std::move(t));
    }

    void emit(tok type, std::size_t offset, std::string text = {}) {
        token t;
        t.type = type;
        t.text = std::move(text);
        t.pos = at(offset);
        out_.push_back(std::move(t));
    }

    // After a tag: `-` strips all whitespace, `+` nothing, a plain block/comment end one newline (trim_blocks).
    std::size_t after_tag_end(std::size_t end, char sign, bool trim_newline) const {
        if (sign == '-') {
            std::size_t p = end;
            while (p < src_.size()) {
                std::size_t q = p;
                if (!utf8::is_space(utf8::next(src_, q))) break;
                p = q;
            }
            return p;
        }
        if (sign != '+' && trim_newline && end < src_.size() && src_[end] == '\n') return end + 1;
        return end;
    }

    std::size_t lex_comment(std::size_t open, std::size_t inner) {
        const std::size_t close = src_.find("#}", inner);
        if (close == std::string::npos) error(open, "missing end of comment tag '#}'");
        const char sign = close > inner && (src_[close - 1] == '-' || src_[close - 1] == '+') ? src_[close - 1] : '\0';
        return after_tag_end(close + 2, sign, true);
    }

    static bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
    static bool is_name_char(char c) { return is_name_start(c) || (c >= '0' && c <= '9'); }
    static bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

    std::size_t skip_ws(std::size_t p) const {
        while (p < src_.size() && is_ws(src_[p]))
            ++p;
        return p;
    }

    bool word_at(std::size_t p, std::string_view w) const {
        return src_.compare(p, w.size(), w) == 0 && (p + w.size() >= src_.size() || !is_name_char(src_[p + w.size()]));
    }

    // `{% raw %}` ... `{% endraw %}`: the text between is data.
    bool is_raw(std::size_t inner) const {
        std::size_t p = skip_ws(inner);
        if (!word_at(p, "raw")) return false;
        p = skip_ws(p + 3);
        return src_.compare(p, 2, "%}") == 0 || src_.compare(p, 3, "-%}") == 0;
    }

    std::size_t lex_raw(std::size_t open, std::size_t inner) {
        std::size_t p = skip_ws(skip_ws(inner) + 3);
        std::size_t body = src_[p] == '-' ? after_tag_end(p + 3, '-', false) : p + 2;
        for (std::size_t q = src_.find("{%", body); q != std::string::npos; q = src_.find("{%", q + 2)) {
            const char sign = q + 2 < src_.size() ? src_[q + 2] : '\0';
            std::size_t r = skip_ws(q + 2 + ((sign == '-' || sign == '+') ? 1 : 0));
            if (!word_at(r, "endraw")) continue;
            r = skip_ws(r + 6);
            char end_sign = '\0';
            if (src_[r] == '-' || src_[r] == '+') end_sign = src_[r++];
            if (src_.compare(r, 2, "%}") != 0) error(q, "expected '%}' after 'endraw'");
            std::string text = src_.substr(body, q - body);
            if (sign == '-')
                text = utf8::strip(text, false, true);
            else if (sign != '+')
                lstrip_block(text, body);
            emit_data(body, std::move(text));
            return after_tag_end(r + 2, end_sign, true);
        }
        error(open, "missing '{% endraw %}' for this raw block");
    }

    std::size_t lex_tag(std::size_t open, std::size_t p, bool variable) {
        emit(variable ? tok::var_begin : tok::block_begin, open);
        std::vector<char> balance;
        while (true) {
            p = skip_ws(p);
            if (p >= src_.size()) error(open, std::string("missing end of tag '") + (variable ? "}}" : "%}") + "'");
            if (balance.empty()) {
                const char* end = variable ? "}}" : "%}";
                char sign = '\0';
                std::size_t q = p;
                if ((src_[q] == '-' || (!variable && src_[q] == '+')) && src_.compare(q + 1, 2, end) == 0)
                    sign = src_[q++];
                if (src_.compare(q, 2, end) == 0) {
                    emit(variable ? tok::var_end : tok::block_end, p);
                    return after_tag_end(q + 2, sign, !variable);
                }
            }
            const char c = src_[p];
            if (is_name_start(c)) {
                std::size_t q = p;
                while (q < src_.size() && is_name_char(src_[q]))
                    ++q;
                emit(tok::name, p, src_.substr(p, q - p));
                p = q;
            } else if (c >= '0' && c <= '9') {
                p = lex_number(p);
            } else if (c == '\'' || c == '"') {
                p = lex_string(p);
            } else {
                static const char* ops[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<",
                                            ">",  "=",  ".",  ",",  ":",  "|",  "(", ")", "[", "]", "{", "}"};
                std::string_view op;
                for (const char* o : ops)
                    if (src_.compare(p, std::char_traits<char>::length(o), o) == 0) {
                        op = o;
                        break;
                    }
                if (op.empty()) error(p, std::string("unexpected character '") + c + "'");
                if (op == "(" || op == "[" || op == "{") {
                    balance.push_back(op == "(" ? ')' : op == "[" ? ']' : '}');
                } else if (op == ")" || op == "]" || op == "}") {
                    if (balance.empty()) error(p, "unexpected '" + std::string(op) + "'");
                    if (balance.back() != op[0])
                        error(p, "unexpected '" + std::string(op) + "', expected '" + balance.back() + "'");
                    balance.pop_back();
                }
                emit(tok::op, p, std::string(op));
                p += op.size();
            }
        }
    }

    std::size_t lex_number(std::size_t p) {
        const std::size_t start = p;
        auto digits = [&] {
            while (p < src_.size() && ((src_[p] >= '0' && src_[p] <= '9') || src_[p] == '_'))
                ++p;
        };
        digits();
        bool is_float = false;
        // An integer straight after '.' is an attribute index (`x.0`), never a float.
        const bool after_dot = !out_.empty() && out_.back().type == tok::op && out_.back().text == ".";
        if (!after_dot && p + 1 < src_.size() && src_[p] == '.' && src_[p + 1] >= '0' && src_[p + 1] <= '9') {
            is_float = true;
            ++p;
            digits();
        }
        if (!after_dot && p < src_.size() && (src_[p] == 'e' || src_[p] == 'E')) {
            std::size_t q = p + 1;
            if (q < src_.size() && (src_[q] == '+' || src_[q] == '-')) ++q;
            if (q < src_.size() && src_[q] >= '0' && src_[q] <= '9') {
                is_float = true;
                p = q;
                digits();
            }
        }
        std::string text;
        for (std::size_t i = start; i < p; ++i)
            if (src_[i] != '_') text += src_[i];
        token t;
        t.pos = at(start);
        t.text = text;
        if (is_float) {
            t.type = tok::floating;
            t.float_value = std::strtod(text.c_str(), nullptr); // 1e999 is inf, as in Python
        } else {
            t.type = tok::integer;
            try {
                t.int_value = std::stoll(text);
            } catch (const std::exception&) {
                error(start, "integer literal " + text + " is out of range");
            }
        }
        out_.push_back(std::move(t));
        return p;
    }

    // Python's unicode-escape decoding, as jinja2 applies to string literals.
    std::size_t lex_string(std::size_t p) {
        const char q = src_[p];
        std::string out;
        std::size_t i = p + 1;
        auto hex = [&](std::size_t n) -> char32_t {
            if (i + n > src_.size()) error(i, "truncated escape in string literal");
            char32_t v = 0;
            for (std::size_t k = 0; k < n; ++k) {
                const char h = src_[i + k];
                v <<= 4;
                if (h >= '0' && h <= '9')
                    v |= static_cast<char32_t>(h - '0');
                else if (h >= 'a' && h <= 'f')
                    v |= static_cast<char32_t>(h - 'a' + 10);
                else if (h >= 'A' && h <= 'F')
                    v |= static_cast<char32_t>(h - 'A' + 10);
                else
                    error(i, "bad escape in string literal");
            }
            i += n;
            return v;
        };
        while (true) {
            if (i >= src_.size()) error(p, "unterminated string literal");
            const char c = src_[i];
            if (c == q) break;
            if (c != '\\') {
                out += c;
                ++i;
                continue;
            }
            if (i + 1 >= src_.size()) error(p, "unterminated string literal");
            const char e = src_[i + 1];
            i += 2;
            switch (e) {
            case '\n':
                break;
            case '\\':
                out += '\\';
                break;
            case '\'':
                out += '\'';
                break;
            case '"':
                out += '"';
                break;
            case 'a':
                out += '\a';
                break;
            case 'b':
                out += '\b';
                break;
            case 'f':
                out += '\f';
                break;
            case 'n':
                out += '\n';
                break;
            case 'r':
                out += '\r';
                break;
            case 't':
                out += '\t';
                break;
            case 'v':
                out += '\v';
                break;
            case 'x':
                utf8::append(out, hex(2));
                break;
            case 'u':
                utf8::append(out, hex(4));
                break;
            case 'U':
                utf8::append(out, hex(8));
                break;
            default:
                if (e >= '0' && e <= '7') {
                    char32_t v = static_cast<char32_t>(e - '0');
                    for (int k = 0; k < 2 && i < src_.size() && src_[i] >= '0' && src_[i] <= '7'; ++k, ++i)
                        v = v * 8 + static_cast<char32_t>(src_[i] - '0');
                    utf8::append(out, v);
                } else {
                    out += '\\';
                    out += e;
                }
            }
        }
        token t;
        t.type = tok::string;
        t.text = std::move(out);
        t.pos = at(p);
        out_.push_back(std::move(t));
        return i + 1;
    }
};

} // namespace detail

// ---- syntax tree ---------------------------------------------------------------------------------------------

enum class expr_kind {
    literal,
    name,
    list,
    tuple,
    dict,
    attr,
    item,
    slice,
    call,
    filter,
    test,
    neg,
    pos,
    binary,
    concat,
    logic_and,
    logic_or,
    logic_not,
    compare,
    cond
};

struct expr;
using expr_ptr = std::unique_ptr<expr>;

struct expr {
    expr_kind kind = expr_kind::literal;
    position pos;
    value literal;                                        // literal
    std::string name;                                     // name, attribute, filter, test, binary operator
    expr_ptr a, b, c;                                     // operands; object of attr/item/call/filter/test
    std::vector<expr_ptr> args;                           // items, call arguments, compare operands
    std::vector<std::pair<std::string, expr_ptr>> kwargs; // keyword arguments
    std::vector<std::string> ops;                         // compare operators

    expr() = default;
    expr(const expr&) = delete;
    expr& operator=(const expr&) = delete;
    // Iterative: `a + a + ... + a` is a left chain as long as the template, too deep to destroy recursively.
    ~expr() {
        std::vector<expr_ptr> pending;
        release_children(pending);
        while (!pending.empty()) {
            expr_ptr e = std::move(pending.back());
            pending.pop_back();
            if (e) e->release_children(pending); // e then dies childless
        }
    }

private:
    void release_children(std::vector<expr_ptr>& into) {
        for (expr_ptr* p : {&a, &b, &c})
            if (*p) into.push_back(std::move(*p));
        for (auto& x : args)
            if (x) into.push_back(std::move(x));
        for (auto& kv : kwargs)
            if (kv.second) into.push_back(std::move(kv.second));
    }
};

enum class stmt_kind { text, output, if_, for_, set, set_block, macro, break_, continue_ };

struct stmt;
using stmt_ptr = std::unique_ptr<stmt>;
using body_t = std::vector<stmt_ptr>;

struct stmt {
    stmt_kind kind = stmt_kind::text;
    position pos;
    std::string text;                                  // text; macro name; set attribute
    expr_ptr e;                                        // output, for iterable, set value
    expr_ptr cond;                                     // for filter
    std::vector<std::pair<expr_ptr, body_t>> branches; // if / elif
    body_t body, else_body;
    std::vector<std::string> targets;                     // for / set names
    std::vector<std::pair<std::string, expr_ptr>> params; // macro parameters (default may be null)
};

// ---- parser --------------------------------------------------------------------------------------------------

inline const std::vector<std::string_view>& known_filters() {
    static const std::vector<std::string_view> f = {
        "abs",        "attr",    "capitalize", "count",  "d",      "default", "dictsort",   "e",
        "escape",     "first",   "float",      "format", "indent", "int",     "items",      "join",
        "last",       "length",  "list",       "lower",  "map",    "max",     "min",        "reject",
        "rejectattr", "replace", "reverse",    "round",  "safe",   "select",  "selectattr", "sort",
        "string",     "sum",     "title",      "tojson", "trim",   "unique",  "upper",      "wordcount"};
    return f;
}

inline const std::vector<std::string_view>& known_tests() {
    static const std::vector<std::string_view> t = {
        "boolean",  "callable", "defined", "divisibleby", "eq",        "equalto", "escaped", "even",     "false",
        "filter",   "float",    "ge",      "greaterthan", "gt",        "in",      "integer", "iterable", "le",
        "lessthan", "lower",    "lt",      "mapping",     "ne",        "none",    "number",  "odd",      "sameas",
        "sequence", "string",   "test",    "true",        "undefined", "upper"};
    return t;
}

class parser {
public:
    parser(std::vector<token> tokens, std::string name) : t_(std::move(tokens)), name_(std::move(name)) {}

    body_t parse_template() {
        std::string end;
        body_t body = parse_body({}, end, t_[0].pos, "");
        return body;
    }

private:
    std::vector<token> t_;
    std::size_t i_ = 0;
    std::string name_;
    int depth_ = 0;

    // One level of recursion of the parser; 20,000 nested parentheses must be an error, not a stack overflow.
    struct nest {
        parser& p;
        explicit nest(parser& owner) : p(owner) {
            if (++p.depth_ > limits::max_nesting)
                p.error(p.cur().pos, "nesting deeper than the limit of " + std::to_string(limits::max_nesting) +
                                         " levels (statements, parentheses, brackets or unary operators)");
        }
        ~nest() { --p.depth_; }
        nest(const nest&) = delete;
        nest& operator=(const nest&) = delete;
    };

    const token& cur() const { return t_[i_]; }
    const token& peek(std::size_t k = 1) const { return t_[std::min(i_ + k, t_.size() - 1)]; }
    token next() { return t_[i_ < t_.size() - 1 ? i_++ : i_]; }

    [[noreturn]] void error(position p, const std::string& m) const { fail_at(name_, p, m); }
    [[noreturn]] void unexpected(const std::string& expected) const {
        error(cur().pos, "expected " + expected + ", got " + describe(cur()));
    }

    static std::string describe(const token& t) {
        switch (t.type) {
        case tok::data:
            return "template text";
        case tok::var_begin:
            return "'{{'";
        case tok::var_end:
            return "end of print statement '}}'";
        case tok::block_begin:
            return "'{%'";
        case tok::block_end:
            return "end of statement block '%}'";
        case tok::name:
            return "'" + t.text + "'";
        case tok::string:
            return "string literal";
        case tok::integer:
        case tok::floating:
            return "number " + t.text;
        case tok::op:
            return "'" + t.text + "'";
        default:
            return "end of template";
        }
    }

    bool is_op(std::string_view op) const { return cur().type == tok::op && cur().text == op; }
    bool is_name(std::string_view n) const { return cur().type == tok::name && cur().text == n; }
    bool skip_op(std::string_view op) {
        if (!is_op(op)) return false;
        next();
        return true;
    }
    bool skip_name(std::string_view n) {
        if (!is_name(n)) return false;
        next();
        return true;
    }
    void expect_op(std::string_view op) {
        if (!skip_op(op)) unexpected("'" + std::string(op) + "'");
    }
    void expect_block_end() {
        if (cur().type != tok::block_end) unexpected("end of statement block '%}'");
        next();
    }
    std::string expect_identifier() {
        if (cur().type != tok::name) unexpected("a name");
        return next().text;
    }

    // Statements up to a `{% name %}` in `ends`; consumes `{%` and that name, and reports which end was hit.
    body_t parse_body(std::initializer_list<std::string_view> ends, std::string& hit, position opened,
                      const std::string& opener) {
        const nest guard(*this);
        body_t body;
        while (true) {
            const token& t = cur();
            if (t.type == tok::eof) {
                if (ends.size() == 0) return body;
                std::string list;
                for (auto e : ends)
                    list += (list.empty() ? "'" : " or '") + std::string(e) + "'";
                error(opened,
                      "'" + opener + "' is never closed (expected " + list + " before the end of the template)");
            }
            if (t.type == tok::data) {
                auto s = std::make_unique<stmt>();
                s->kind = stmt_kind::text;
                s->pos = t.pos;
                s->text = t.text;
                body.push_back(std::move(s));
                next();
            } else if (t.type == tok::var_begin) {
                auto s = std::make_unique<stmt>();
                s->kind = stmt_kind::output;
                s->pos = t.pos;
                next();
                s->e = parse_tuple(true);
                if (cur().type != tok::var_end) unexpected("end of print statement '}}'");
                next();
                body.push_back(std::move(s));
            } else if (t.type == tok::block_begin) {
                const token& n = peek();
                if (n.type == tok::name && std::find(ends.begin(), ends.end(), n.text) != ends.end()) {
                    hit = n.text;
                    next();
                    next();
                    return body;
                }
                next();
                if (auto s = parse_statement()) body.push_back(std::move(s));
            } else {
                unexpected("template text or a tag");
            }
        }
    }

    stmt_ptr parse_statement() {
        const token tag = cur();
        if (tag.type != tok::name) unexpected("a statement name");
        const std::string& n = tag.text;
        auto s = std::make_unique<stmt>();
        s->pos = tag.pos;
        next();
        if (n == "if") {
            s->kind = stmt_kind::if_;
            expr_ptr test = parse_tuple(false);
            while (true) {
                expect_block_end();
                std::string hit;
                body_t body = parse_body({"elif", "else", "endif"}, hit, tag.pos, "if");
                s->branches.emplace_back(std::move(test), std::move(body));
                if (hit == "elif") {
                    test = parse_tuple(false);
                    continue;
                }
                if (hit == "else") {
                    expect_block_end();
                    s->else_body = parse_body({"endif"}, hit, tag.pos, "if");
                }
                expect_block_end();
                break;
            }
        } else if (n == "for") {
            s->kind = stmt_kind::for_;
            s->targets = parse_targets();
            if (!skip_name("in")) unexpected("'in'");
            s->e = parse_tuple(false);
            if (skip_name("if")) s->cond = parse_expression(true);
            if (is_name("recursive")) error(cur().pos, "recursive for loops are not supported");
            expect_block_end();
            std::string hit;
            s->body = parse_body({"endfor", "else"}, hit, tag.pos, "for");
            if (hit == "else") {
                expect_block_end();
                s->else_body = parse_body({"endfor"}, hit, tag.pos, "for");
            }
            expect_block_end();
        } else if (n == "set") {
            s->targets = parse_targets();
            if (s->targets.size() == 1 && skip_op(".")) s->text = expect_identifier();
            if (skip_op("=")) {
                s->kind = stmt_kind::set;
                s->e = parse_tuple(true);
                expect_block_end();
            } else {
                if (s->targets.size() != 1 || !s->text.empty()) unexpected("'='");
                s->kind = stmt_kind::set_block;
                expect_block_end();
                std::string hit;
                s->body = parse_body({"endset"}, hit, tag.pos, "set");
                expect_block_end();
            }
        } else if (n == "macro") {
            s->kind = stmt_kind::macro;
            s->text = expect_identifier();
            expect_op("(");
            while (!is_op(")")) {
                if (!s->params.empty()) expect_op(",");
                if (is_op(")")) break;
                std::string p = expect_identifier();
                expr_ptr def;
                if (skip_op("=")) def = parse_expression(true);
                s->params.emplace_back(std::move(p), std::move(def));
            }
            expect_op(")");
            expect_block_end();
            std::string hit;
            s->body = parse_body({"endmacro"}, hit, tag.pos, "macro");
            if (cur().type == tok::name) next(); // `{% endmacro name %}`
            expect_block_end();
        } else if (n == "break" || n == "continue") {
            s->kind = n == "break" ? stmt_kind::break_ : stmt_kind::continue_;
            expect_block_end();
        } else if (n == "generation") {
            // transformers' assistant-mask marker: renders its body unchanged.
            expect_block_end();
            std::string hit;
            s->kind = stmt_kind::if_;
            auto yes = std::make_unique<expr>();
            yes->literal = value(true);
            s->branches.emplace_back(std::move(yes), parse_body({"endgeneration"}, hit, tag.pos, "generation"));
            expect_block_end();
        } else {
            error(tag.pos, "unknown or unsupported tag '" + n + "'");
        }
        return s;
    }

    std::vector<std::string> parse_targets() {
        std::vector<std::string> names;
        const bool paren = skip_op("(");
        do {
            names.push_back(expect_identifier());
        } while (skip_op(","));
        if (paren) expect_op(")");
        return names;
    }

    expr_ptr node(expr_kind k, position p) {
        auto e = std::make_unique<expr>();
        e->kind = k;
        e->pos = p;
        return e;
    }

    expr_ptr parse_tuple(bool with_condexpr) {
        const position p = cur().pos;
        expr_ptr first = parse_expression(with_condexpr);
        if (!is_op(",")) return first;
        auto t = node(expr_kind::tuple, p);
        t->args.push_back(std::move(first));
        while (skip_op(",")) {
            if (cur().type == tok::var_end || cur().type == tok::block_end || is_op(")")) break;
            t->args.push_back(parse_expression(with_condexpr));
        }
        return t;
    }

    expr_ptr parse_expression(bool with_condexpr) {
        const nest guard(*this);
        if (!with_condexpr) return parse_or();
        expr_ptr e = parse_or();
        while (is_name("if")) {
            const position p = cur().pos;
            next();
            auto c = node(expr_kind::cond, p);
            c->b = parse_or();
            c->a = std::move(e);
            if (skip_name("else")) c->c = parse_expression(true);
            e = std::move(c);
        }
        return e;
    }

    expr_ptr parse_or() {
        expr_ptr e = parse_and();
        while (is_name("or")) {
            auto o = node(expr_kind::logic_or, cur().pos);
            next();
            o->a = std::move(e);
            o->b = parse_and();
            e = std::move(o);
        }
        return e;
    }

    expr_ptr parse_and() {
        expr_ptr e = parse_not();
        while (is_name("and")) {
            auto o = node(expr_kind::logic_and, cur().pos);
            next();
            o->a = std::move(e);
            o->b = parse_not();
            e = std::move(o);
        }
        return e;
    }

    expr_ptr parse_not() {
        if (is_name("not")) {
            const nest guard(*this);
            auto o = node(expr_kind::logic_not, cur().pos);
            next();
            o->a = parse_not();
            return o;
        }
        return parse_compare();
    }

    expr_ptr parse_compare() {
        const position p = cur().pos;
        expr_ptr e = parse_math1();
        expr_ptr cmp;
        while (true) {
            std::string op;
            if (cur().type == tok::op && (cur().text == "==" || cur().text == "!=" || cur().text == "<" ||
                                          cur().text == ">" || cur().text == "<=" || cur().text == ">=")) {
                op = next().text;
            } else if (is_name("in")) {
                next();
                op = "in";
            } else if (is_name("not") && peek().type == tok::name && peek().text == "in") {
                next();
                next();
                op = "not in";
            } else {
                break;
            }
            if (!cmp) {
                cmp = node(expr_kind::compare, p);
                cmp->a = std::move(e);
            }
            cmp->ops.push_back(op);
            cmp->args.push_back(parse_math1());
        }
        return cmp ? std::move(cmp) : std::move(e);
    }

    expr_ptr binary(std::string op, position p, expr_ptr a, expr_ptr b) {
        auto e = node(op == "~" ? expr_kind::concat : expr_kind::binary, p);
        e->name = std::move(op);
        e->a = std::move(a);
        e->b = std::move(b);
        return e;
    }

    expr_ptr parse_math1() {
        expr_ptr e = parse_concat();
        while (is_op("+") || is_op("-")) {
            const token op = next();
            e = binary(op.text, op.pos, std::move(e), parse_concat());
        }
        return e;
    }

    expr_ptr parse_concat() {
        expr_ptr e = parse_math2();
        while (is_op("~")) {
            const token op = next();
            e = binary(op.text, op.pos, std::move(e), parse_math2());
        }
        return e;
    }

    expr_ptr parse_math2() {
        expr_ptr e = parse_pow();
        while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
            const token op = next();
            e = binary(op.text, op.pos, std::move(e), parse_pow());
        }
        return e;
    }

    expr_ptr parse_pow() {
        expr_ptr e = parse_unary(true);
        while (is_op("**")) {
            const token op = next();
            e = binary(op.text, op.pos, std::move(e), parse_unary(true));
        }
        return e;
    }

    expr_ptr parse_unary(bool with_filter) {
        expr_ptr e;
        if (is_op("-") || is_op("+")) {
            const nest guard(*this);
            e = node(is_op("-") ? expr_kind::neg : expr_kind::pos, cur().pos);
            next();
            e->a = parse_unary(false);
        } else {
            e = parse_primary();
        }
        e = parse_postfix(std::move(e));
        if (with_filter) e = parse_filter_expr(std::move(e));
        return e;
    }

    expr_ptr parse_primary() {
        const token t = cur();
        switch (t.type) {
        case tok::name: {
            next();
            auto e = node(expr_kind::literal, t.pos);
            if (t.text == "true" || t.text == "True") {
                e->literal = value(true);
            } else if (t.text == "false" || t.text == "False") {
                e->literal = value(false);
            } else if (t.text == "none" || t.text == "None") {
                e->literal = value(none_t{});
            } else {
                e->kind = expr_kind::name;
                e->name = t.text;
            }
            return e;
        }
        case tok::string: {
            std::string s;
            while (cur().type == tok::string)
                s += next().text; // adjacent literals concatenate
            auto e = node(expr_kind::literal, t.pos);
            e->literal = value(std::move(s));
            return e;
        }
        case tok::integer:
        case tok::floating: {
            next();
            auto e = node(expr_kind::literal, t.pos);
            e->literal = t.type == tok::integer ? value(t.int_value) : value(t.float_value);
            return e;
        }
        case tok::op:
            if (t.text == "(") {
                next();
                if (skip_op(")")) return node(expr_kind::tuple, t.pos);
                expr_ptr first = parse_expression(true);
                if (skip_op(")")) return first;
                auto tup = node(expr_kind::tuple, t.pos);
                tup->args.push_back(std::move(first));
                while (skip_op(",")) {
                    if (is_op(")")) break;
                    tup->args.push_back(parse_expression(true));
                }
                expect_op(")");
                return tup;
            }
            if (t.text == "[") {
                next();
                auto l = node(expr_kind::list, t.pos);
                while (!is_op("]")) {
                    if (!l->args.empty()) expect_op(",");
                    if (is_op("]")) break;
                    l->args.push_back(parse_expression(true));
                }
                expect_op("]");
                return l;
            }
            if (t.text == "{") {
                next();
                auto d = node(expr_kind::dict, t.pos);
                while (!is_op("}")) {
                    if (!d->args.empty()) expect_op(",");
                    if (is_op("}")) break;
                    d->args.push_back(parse_expression(true));
                    expect_op(":");
                    d->args.push_back(parse_expression(true));
                }
                expect_op("}");
                return d;
            }
            break;
        default:
            break;
        }
        unexpected("an expression");
    }

    expr_ptr parse_postfix(expr_ptr e) {
        while (true) {
            if (is_op(".")) {
                next();
                if (cur().type == tok::integer) {
                    auto it = node(expr_kind::item, e->pos);
                    auto idx = node(expr_kind::literal, cur().pos);
                    idx->literal = value(next().int_value);
                    it->a = std::move(e);
                    it->b = std::move(idx);
                    e = std::move(it);
                } else {
                    auto at = node(expr_kind::attr, e->pos);
                    at->name = expect_identifier();
                    at->a = std::move(e);
                    e = std::move(at);
                }
            } else if (is_op("[")) {
                e = parse_subscript(std::move(e));
            } else if (is_op("(")) {
                e = parse_call(std::move(e));
            } else {
                return e;
            }
        }
    }

    expr_ptr parse_subscript(expr_ptr obj) {
        const position p = cur().pos;
        next();
        expr_ptr parts[3];
        int colons = 0;
        while (!is_op("]")) {
            if (skip_op(":")) {
                if (++colons > 2) unexpected("']'");
                continue;
            }
            if (parts[colons]) unexpected("':' or ']'");
            parts[colons] = parse_expression(true);
        }
        next();
        if (colons == 0) {
            if (!parts[0]) error(p, "empty subscript");
            auto it = node(expr_kind::item, obj->pos);
            it->a = std::move(obj);
            it->b = std::move(parts[0]);
            return it;
        }
        auto sl = node(expr_kind::slice, obj->pos);
        sl->a = std::move(obj);
        for (auto& part : parts)
            sl->args.push_back(std::move(part));
        return sl;
    }

    void parse_args(expr& call) {
        expect_op("(");
        while (!is_op(")")) {
            if (!call.args.empty() || !call.kwargs.empty()) expect_op(",");
            if (is_op(")")) break;
            if (cur().type == tok::name && peek().type == tok::op && peek().text == "=") {
                std::string key = next().text;
                next();
                call.kwargs.emplace_back(std::move(key), parse_expression(true));
            } else {
                if (!call.kwargs.empty()) error(cur().pos, "positional argument after keyword argument");
                call.args.push_back(parse_expression(true));
            }
        }
        expect_op(")");
    }

    expr_ptr parse_call(expr_ptr callee) {
        auto c = node(expr_kind::call, callee->pos);
        c->a = std::move(callee);
        parse_args(*c);
        return c;
    }

    expr_ptr parse_filter_expr(expr_ptr e) {
        while (true) {
            if (is_op("|")) {
                const position p = cur().pos;
                next();
                auto f = node(expr_kind::filter, p);
                if (cur().type != tok::name) unexpected("a filter name");
                f->pos = cur().pos;
                f->name = next().text;
                const auto& known = known_filters();
                if (std::find(known.begin(), known.end(), f->name) == known.end())
                    error(f->pos, "unknown filter '" + f->name + "'");
                f->a = std::move(e);
                if (is_op("(")) parse_args(*f);
                e = std::move(f);
            } else if (is_name("is")) {
                const position p = cur().pos;
                next();
                const bool negated = skip_name("not");
                auto t = node(expr_kind::test, p);
                if (cur().type != tok::name) unexpected("a test name");
                const position tp = cur().pos;
                t->name = next().text;
                const auto& known = known_tests();
                if (std::find(known.begin(), known.end(), t->name) == known.end())
                    error(tp, "unknown test '" + t->name + "'");
                t->a = std::move(e);
                if (is_op("(")) {
                    parse_args(*t);
                } else if ((cur().type == tok::name || cur().type == tok::string || cur().type == tok::integer ||
                            cur().type == tok::floating || is_op("(") || is_op("[") || is_op("{")) &&
                           !is_name("else") && !is_name("or") && !is_name("and")) {
                    if (is_name("is")) error(cur().pos, "you cannot chain multiple tests with 'is'");
                    t->args.push_back(parse_postfix(parse_primary()));
                }
                if (negated) {
                    auto n = node(expr_kind::logic_not, p);
                    n->a = std::move(t);
                    e = std::move(n);
                } else {
                    e = std::move(t);
                }
            } else if (is_op("(")) {
                e = parse_call(std::move(e));
            } else {
                return e;
            }
        }
    }
};

inline body_t parse(std::string_view source, const std::string& name) {
    detail::lexer lx(source, name);
    parser p(lx.run(), name);
    return p.parse_template();
}

} // namespace tl::jinja
