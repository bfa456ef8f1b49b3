// Hostile chat templates (issue 21): templates arrive inside strangers' tokenizer_config.json, so each way of
// overflowing the stack or exhausting memory or time must end in a tl::error that names the limit.
#include <tinylm/tokenizer/chat_template.hpp>

#include "../support/errors.hpp"

#include <boost/test/unit_test.hpp>

#include <string>

BOOST_AUTO_TEST_SUITE(template_limits)

namespace {
using json = nlohmann::ordered_json;

// The message of the tl::error rendering `source` throws (an escaping std::exception fails the test).
std::string error_of(const std::string& source, const json& messages = json::array()) {
    try {
        tl::chat_template t(source, "t");
        if (messages.empty())
            t.render_variables(json::object());
        else
            t.render(messages);
    } catch (const tl::error& e) {
        return e.what();
    }
    return tl_test::no_error;
}
std::string repeat(const std::string& s, int n) {
    std::string out;
    for (int i = 0; i < n; ++i)
        out += s;
    return out;
}
bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }
} // namespace

BOOST_AUTO_TEST_CASE(parser_nesting) {
    const std::string parens = error_of("{{ " + repeat("(", 20000) + "1" + repeat(")", 20000) + " }}");
    BOOST_TEST(has(parens, "nesting deeper than the limit of 64 levels"), parens);
    const std::string brackets = error_of("{{ " + repeat("[", 20000) + repeat("]", 20000) + " }}");
    BOOST_TEST(has(brackets, "nesting deeper than the limit"), brackets);
    BOOST_TEST(has(error_of("{{ " + repeat("-", 20000) + "1 }}"), "nesting deeper than the limit"));
    BOOST_TEST(has(error_of(repeat("{% if true %}", 20000)), "nesting deeper than the limit"));
    BOOST_TEST(error_of("{{ " + repeat("(", 30) + "1" + repeat(")", 30) + " }}") == tl_test::no_error);
}

BOOST_AUTO_TEST_CASE(interpreter_recursion) {
    const std::string nots = error_of("{{ " + repeat("not ", 20000) + "1 }}");
    BOOST_TEST(has(nots, "limit"), nots);
    const std::string macro = error_of("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
    BOOST_TEST(has(macro, "evaluation nested deeper than the limit of 256 levels"), macro);
    // A left chain is built by a loop, not by recursion: evaluating it is what the call-depth limit bounds.
    const std::string chain = error_of("{{ 1" + repeat(" + 1", 20000) + " }}");
    BOOST_TEST(has(chain, "evaluation nested deeper than the limit"), chain);
    BOOST_TEST(error_of("{{ 1" + repeat(" + 1", 100) + " }}") == tl_test::no_error);
}

BOOST_AUTO_TEST_CASE(output_size) {
    BOOST_TEST(
        has(error_of("{{ 'a' | indent(99999999999) }}"), "indent width: the result would exceed the output limit"));
    BOOST_TEST(has(error_of("{{ 'a\\nb\\nc\\nd' | indent(30000000) }}"), "output limit"));
    BOOST_TEST(has(error_of("{{ [[[1]]] | tojson(indent=2000000000) }}"), "tojson indent"));
    BOOST_TEST(has(error_of("{% set s = 'x' * 1000000 %}{% for i in range(100) %}{{ s }}{% endfor %}"),
                   "template output: the result would exceed the output limit of 64 MiB"));
    const std::string doubling =
        error_of("{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}");
    BOOST_TEST(has(doubling, "string: the result would exceed the output limit"), doubling);
}

BOOST_AUTO_TEST_CASE(loop_iterations) {
    BOOST_TEST(has(error_of("{% for i in range(10**7) %}{% for j in range(10**7) %}{% endfor %}{% endfor %}"),
                   "range() too large"));
    const std::string nested =
        error_of("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}");
    BOOST_TEST(has(nested, "loop iterations in one render (the loop limit)"), nested);
}

BOOST_AUTO_TEST_CASE(deep_messages) {
    json deep = json::array();
    json* at = &deep;
    for (int i = 0; i < 100000; ++i) {
        at->push_back(json::array());
        at = &(*at)[0];
    }
    // Moved, never copied: nlohmann's copy constructor recurses, and 100,000 levels overflow the stack before the
    // template sees them (the depth check under test runs before any recursion of tinylm's own).
    json message = json::object();
    message["role"] = "user";
    message["content"] = std::move(deep);
    json messages = json::array();
    messages.push_back(std::move(message));
    const std::string m = error_of("{{ messages }}", messages);
    BOOST_TEST(has(m, "nest deeper than the limit of 128 levels"), m);
    const std::string built =
        error_of("{% set ns = namespace(x=[1]) %}{% for i in range(200) %}{% set ns.x = [ns.x] %}{% endfor %}"
                 "{{ ns.x | tojson }}");
    BOOST_TEST(has(built, "nested deeper than the limit of 128 levels"), built);
    BOOST_TEST(
        has(error_of("{% set ns = namespace(x=[1]) %}{% for i in range(200) %}{% set ns.x = [ns.x] %}{% endfor %}"
                     "{{ ns.x }}"),
            "nested deeper than the limit of 128 levels"));
}

// The lexer once recomputed line and column for every token, quadratic on one long line; no timed assertion here
// (tests do not time), the fuzz target's per-input timeout guards it (tests/regressions/jinja/, a 40 KB line).
BOOST_AUTO_TEST_CASE(long_one_line_template) {
    BOOST_TEST(error_of(repeat("{{ 1 }}", 40000)) == tl_test::no_error); // 280 KB on one line
    const std::string late = error_of(repeat("{{ 1 }}", 1000) + "{{ ) }}");
    BOOST_TEST(has(late, "line 1, column 7004"), late);
}

BOOST_AUTO_TEST_SUITE_END()
