// Chat templates: byte-identical renderings against transformers' apply_chat_template (the committed
// tests/reference/chat/chat_cases.json, made by make_chat_reference.py), interpreter snippets against Jinja2,
// tokenizer_config.json reading, and errors that name the line and column.
#include "../support/data.hpp"
#include "../support/errors.hpp"

#include <tinylm/tokenizer/chat_template.hpp>

#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>

#include <unistd.h>

namespace {

using tl_test::error_of;

using json = nlohmann::ordered_json;

std::string reference_path() { return TINYLM_SOURCE_DIR "/tests/reference/chat/chat_cases.json"; }

const json& reference() {
    static const json ref = [] {
        std::ifstream in(reference_path(), std::ios::binary);
        BOOST_REQUIRE_MESSAGE(in, "cannot open " + reference_path());
        return json::parse(in);
    }();
    return ref;
}

// Where two renderings first differ, with some context, for the failure message.
std::string first_difference(const std::string& got, const std::string& want) {
    std::size_t i = 0;
    while (i < got.size() && i < want.size() && got[i] == want[i])
        ++i;
    const std::size_t from = i > 40 ? i - 40 : 0;
    return "first difference at byte " + std::to_string(i) + "\n  got:  «" + got.substr(from, 100) + "»\n  want: «" +
           want.substr(from, 100) + "»";
}

tl::chat_template reference_template(const std::string& name) {
    const json& t = reference()["templates"][name];
    tl::chat_template tmpl(t["source"].get<std::string>(), "chat template '" + name + "'");
    for (const auto& [k, v] : t["special_tokens"].items())
        tmpl.set_variable(k, v);
    return tmpl;
}

std::string render(const std::string& source, const json& vars = json::object()) {
    return tl::chat_template(source, "t").render_variables(vars);
}

void check_error(const std::string& source, const std::string& expected_part, const json& vars = json::object()) {
    const std::string msg = error_of([&] { render(source, vars); });
    BOOST_TEST_INFO("template: " << source);
    BOOST_TEST_INFO("error: " << msg);
    BOOST_CHECK(msg.find(expected_part) != std::string::npos);
}

} // namespace

BOOST_AUTO_TEST_SUITE(chat_template)

BOOST_AUTO_TEST_CASE(hf_reference_conversations) {
    const json& ref = reference();
    std::map<std::string, int> passed, failed;
    for (const auto& c : ref["cases"]) {
        const std::string name = c["template"].get<std::string>();
        const std::string conv = c["conversation"].get<std::string>();
        const tl::chat_template t = reference_template(name);
        tl::chat_render_options o;
        o.add_generation_prompt = c["add_generation_prompt"].get<bool>();
        if (c["tools"].get<bool>()) o.tools = ref["tools"];
        o.extra = c["extra"];
        const std::string label =
            name + " / " + conv + " / add_generation_prompt=" + (o.add_generation_prompt ? "true" : "false") +
            (c["tools"].get<bool>() ? " / tools" : "") + (c["extra"].empty() ? "" : " / " + c["extra"].dump());
        bool ok;
        if (c.contains("expected_error")) {
            const std::string msg = error_of([&] { t.render(ref["conversations"][conv], o); });
            ok = msg.find(c["expected_error"].get<std::string>()) != std::string::npos;
            BOOST_CHECK_MESSAGE(ok, label << ": expected an error containing «"
                                          << c["expected_error"].get<std::string>() << "», got «" << msg << "»");
        } else {
            std::string got;
            try {
                got = t.render(ref["conversations"][conv], o);
            } catch (const tl::error& e) {
                got = std::string("(error) ") + e.what();
            }
            const std::string want = c["expected"].get<std::string>();
            ok = got == want;
            BOOST_CHECK_MESSAGE(ok, label << ": " << first_difference(got, want));
        }
        ++(ok ? passed : failed)[name];
    }
    std::ostringstream summary;
    summary << "templates rendered byte-identically to transformers " << ref["transformers"].get<std::string>()
            << " apply_chat_template (jinja2 " << ref["jinja2"].get<std::string>() << "):";
    for (const auto& [name, n] : passed) {
        summary << "\n  " << name << ": " << n << " cases"
                << (failed.count(name) ? ", " + std::to_string(failed[name]) + " FAILED" : std::string()) << "  ["
                << ref["templates"][name]["origin"].get<std::string>() << "]";
    }
    BOOST_TEST_MESSAGE(summary.str());
    BOOST_TEST(ref["cases"].size() >= 90u);
}

BOOST_AUTO_TEST_CASE(hf_reference_snippets) {
    const json& ref = reference();
    int n = 0;
    for (const auto& s : ref["snippets"]) {
        const std::string name = s["name"].get<std::string>();
        std::string got;
        try {
            got = tl::chat_template(s["source"].get<std::string>(), "snippet '" + name + "'")
                      .render_variables(ref["snippet_variables"]);
        } catch (const tl::error& e) {
            got = std::string("(error) ") + e.what();
        }
        const std::string want = s["expected"].get<std::string>();
        BOOST_CHECK_MESSAGE(got == want, "snippet " << name << ": " << first_difference(got, want));
        ++n;
    }
    BOOST_TEST_MESSAGE(n << " interpreter snippets rendered identically to Jinja2");
}

BOOST_AUTO_TEST_CASE(builtin_templates) {
    const json& ref = reference();
    BOOST_TEST(std::string(tl::chat_templates::chatml) == ref["templates"]["chatml"]["source"].get<std::string>());
    BOOST_TEST(std::string(tl::chat_templates::zephyr) == ref["templates"]["zephyr"]["source"].get<std::string>());
    // The built-ins carry their models' special tokens, so they render the reference cases unaided.
    for (const char* name : {"chatml", "zephyr"}) {
        const tl::chat_template t =
            std::string(name) == "chatml" ? tl::chat_template::chatml() : tl::chat_template::zephyr();
        int n = 0;
        for (const auto& c : ref["cases"]) {
            if (c["template"] != name || c.contains("expected_error")) continue;
            tl::chat_render_options o;
            o.add_generation_prompt = c["add_generation_prompt"].get<bool>();
            if (c["tools"].get<bool>()) o.tools = ref["tools"];
            BOOST_TEST(t.render(ref["conversations"][c["conversation"].get<std::string>()], o) ==
                       c["expected"].get<std::string>());
            ++n;
        }
        BOOST_TEST(n > 10);
    }
    const json msgs = json::parse(R"([{"role": "user", "content": "Привет"}])");
    BOOST_TEST(tl::chat_template::zephyr().render(msgs, {.add_generation_prompt = true}) ==
               "<|user|>\nПривет</s>\n<|assistant|>\n");
    BOOST_TEST(tl::chat_template::chatml().render(msgs) ==
               "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
               "<|im_start|>user\nПривет<|im_end|>\n");
}

BOOST_AUTO_TEST_CASE(render_options) {
    const json msgs = json::parse(R"([{"role": "user", "content": "x", "extra": null}])");
    const tl::chat_template t(
        "{{ bos_token }}|{{ eos_token }}|{{ tools is none }}|{{ documents is none }}|"
        "{{ add_generation_prompt }}|{{ flag }}|{{ messages[0].extra is defined }}|{{ bos_token is defined }}");
    BOOST_TEST(t.render(msgs) == "||True|True|False||False|False");
    tl::chat_render_options o;
    o.bos_token = "<s>";
    o.eos_token = "</s>";
    o.tools = json::array();
    o.add_generation_prompt = true;
    o.extra = {{"flag", 7}};
    BOOST_TEST(t.render(msgs, o) == "<s>|</s>|False|True|True|7|False|True");
    tl::chat_template z = tl::chat_template::zephyr();
    o = {};
    o.eos_token = "<|end|>";
    BOOST_TEST(z.render(msgs, o) == "<|user|>\nx<|end|>\n");
    BOOST_TEST(error_of([&] { t.render(json::object()); }).find("messages must be a JSON array") != std::string::npos);
    BOOST_TEST(error_of([&] { t.render(json::array({1})); }).find("message 0 is not a JSON object") !=
               std::string::npos);
    // Reasoning under other names reaches the templates as reasoning_content and thinking (transformers 5).
    const tl::chat_template r(
        "{% for m in messages %}{{ m.reasoning_content }}/{{ m.thinking }}/{{ m|tojson }};{% endfor %}");
    BOOST_TEST(
        r.render(json::parse(R"([{"role": "assistant", "content": "a", "reasoning": "r"}, {"role": "user"}])")) ==
        R"(r/r/{"thinking": "r", "role": "assistant", "content": "a", "reasoning": "r", "reasoning_content": "r"};//{"role": "user"};)");
}

BOOST_AUTO_TEST_CASE(from_tokenizer_config_forms) {
    const auto dir = std::filesystem::temp_directory_path() / ("tinylm_chat_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    auto write = [&](const std::string& name, const std::string& text) {
        std::filesystem::create_directories((dir / name).parent_path());
        std::ofstream(dir / name, std::ios::binary) << text;
        return dir / name;
    };
    const json msgs = json::parse(R"([{"role": "user", "content": "hi"}])");

    // String template, AddedToken-style bos, string eos, null unk.
    auto p =
        write("a/tokenizer_config.json",
              R"({"chat_template": "{{ bos_token }}{% for m in messages %}{{ m.content }}{{ eos_token }}{% endfor %}",
                       "bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": false}, "eos_token": "</s>",
                       "unk_token": null})");
    auto t = tl::chat_template::from_tokenizer_config(p);
    BOOST_TEST(t.render(msgs) == "<s>hi</s>");
    BOOST_TEST(t.variables().size() == 2u);

    // The list form, picked by name.
    p = write("b/tokenizer_config.json",
              R"({"chat_template": [{"name": "default", "template": "D{{ messages|length }}"},
                                    {"name": "tool_use", "template": "T{{ tools|length }}"}]})");
    BOOST_TEST(tl::chat_template::from_tokenizer_config(p).render(msgs) == "D1");
    tl::chat_render_options o;
    o.tools = json::parse(R"([{"name": "f"}, {"name": "g"}])");
    BOOST_TEST(tl::chat_template::from_tokenizer_config(p, "tool_use").render(msgs, o) == "T2");
    BOOST_TEST(error_of([&] {
                   tl::chat_template::from_tokenizer_config(p, "rag");
               }).find("no chat template named 'rag' (it has: default, tool_use)") != std::string::npos);

    // No template in the config: chat_template.jinja beside it, else a clear error.
    p = write("c/tokenizer_config.json", R"({"eos_token": "</s>"})");
    BOOST_TEST(error_of([&] { tl::chat_template::from_tokenizer_config(p); }).find("no chat_template") !=
               std::string::npos);
    write("c/chat_template.jinja", "J{{ eos_token }}\n");
    BOOST_TEST(tl::chat_template::from_tokenizer_config(p).render(msgs) == "J</s>");

    BOOST_TEST(error_of([&] { tl::chat_template::from_tokenizer_config(dir / "missing.json"); }).find("cannot open") !=
               std::string::npos);
    p = write("d/tokenizer_config.json", R"({"chat_template": 5})");
    BOOST_TEST(error_of([&] { tl::chat_template::from_tokenizer_config(p); }).find("must be a string or a list") !=
               std::string::npos);
    std::filesystem::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(shared_data_tokenizer_configs, tl_test::needs_data("tokenizers/qwen3/tokenizer_config.json",
                                                                        "tokenizers/llama2/tokenizer_config.json")) {
    const auto qwen3 = tl_test::data_path("tokenizers/qwen3/tokenizer_config.json");
    const auto llama2 = tl_test::data_path("tokenizers/llama2/tokenizer_config.json");
    const auto t = tl::chat_template::from_tokenizer_config(qwen3);
    BOOST_TEST(t.source() == reference()["templates"]["qwen3"]["source"].get<std::string>());
    BOOST_TEST(t.variables() == reference()["templates"]["qwen3"]["special_tokens"]);
    BOOST_TEST(error_of([&] { tl::chat_template::from_tokenizer_config(llama2); }).find("no chat_template") !=
               std::string::npos);
}

BOOST_AUTO_TEST_CASE(interpreter_basics) {
    // Whitespace control, as transformers configures Jinja2 (trim_blocks, lstrip_blocks).
    BOOST_TEST(render("a  {{- 1 -}}  b") == "a1b");
    BOOST_TEST(render("x\n    {% if true %}\n    y\n    {% endif %}\nz") == "x\n    y\nz");
    BOOST_TEST(render("{# c #}\n{{ 'v' }}\n") == "v");
    // Loops and scoping.
    BOOST_TEST(render("{% for x in xs %}{{ loop.index }}{{ x }}{% if not loop.last %},{% endif %}{% endfor %}",
                      {{"xs", {"a", "b"}}}) == "1a,2b");
    BOOST_TEST(
        render(
            "{% set ns = namespace(n=0) %}{% for x in [1, 2, 3] %}{% set ns.n = ns.n + x %}{% endfor %}{{ ns.n }}") ==
        "6");
    BOOST_TEST(render("{% set n = 0 %}{% for x in [1, 2, 3] %}{% set n = n + x %}{% endfor %}{{ n }}") == "0");
    BOOST_TEST(render("{{ xs[::-1]|join }}|{{ xs[1:]|join }}", {{"xs", {"a", "b", "c"}}}) == "cba|bc");
    // Filters and methods on Cyrillic text count code points.
    BOOST_TEST(render("{{ 'Привет'|length }} {{ 'Привет'|upper }} {{ ' ә '|trim }}") == "6 ПРИВЕТ ә");
    BOOST_TEST(render("{{ m|tojson }}", {{"m", {{"k", "в\"ы"}, {"n", 1.5}}}}) == R"({"k": "в\"ы", "n": 1.5})");
}

BOOST_AUTO_TEST_CASE(errors_name_line_and_column) {
    // Syntax errors.
    check_error("ab\n{% if x %}\nno end",
                "t, line 2, column 4: 'if' is never closed (expected 'elif' or 'else' or 'endif'");
    check_error("{{ 1 + }}", "t, line 1, column 8: expected an expression, got end of print statement '}}'");
    check_error("x\n  {{ a b }}", "t, line 2, column 8: expected end of print statement '}}', got 'b'");
    check_error("{% frobnicate %}", "t, line 1, column 4: unknown or unsupported tag 'frobnicate'");
    check_error("{{ (1 ]}}", "t, line 1, column 7: unexpected ']', expected ')'");
    check_error("{{ 'abc }}", "t, line 1, column 4: unterminated string literal");
    check_error("{# never closed", "t, line 1, column 1: missing end of comment tag");
    check_error("{{ x", "t, line 1, column 1: missing end of tag '}}'");
    check_error("{% for x in y %}{% endif %}", "t, line 1, column 20: unknown or unsupported tag 'endif'");
    // Unknown filters and tests are found when the template is parsed.
    check_error("\n\n   {{ x | frobnicate }}", "t, line 3, column 11: unknown filter 'frobnicate'");
    check_error("{{ x is frobnicated }}", "t, line 1, column 9: unknown test 'frobnicated'");
    // Misuse of values, at the expression that failed.
    check_error("{{ 'a' + 1 }}", "t, line 1, column 8: can only concatenate str (not \"int\") to str");
    check_error("line one\n{{ missing.attr }}", "t, line 2, column 4: 'missing' is undefined");
    check_error("{{ m.nope + 'x' }}", "t, line 1, column 11: 'dict object' has no attribute 'nope'",
                {{"m", json::object()}});
    check_error("{% for x in 5 %}{% endfor %}", "t, line 1, column 13: 'int' object is not iterable");
    check_error("{% set d = {} %}{% set d.x = 1 %}", "t, line 1, column 20: cannot assign attribute 'x' on 'd'");
    check_error("{{ 'abc'.nope() }}", "t, line 1, column 4: 'str object' has no attribute 'nope'");
    check_error("{{ [1]|tojson }}{{ x|tojson }}",
                "t, line 1, column 22: tojson: Object of type Undefined is not JSON serializable");
    check_error("{{ 1 // 0 }}", "t, line 1, column 6: integer division or modulo by zero");
    check_error("{{ 2 ** 64 }}", "t, line 1, column 6: integer overflow");
    check_error("{{ 'a'|lower(1) }}", "t, line 1, column 8: lower() takes at most 0 positional argument(s), 1 given");
    // raise_exception carries the template's message.
    check_error("ok\n{{ raise_exception('Roles must alternate') }}",
                "t, line 2, column 4: raise_exception: Roles must alternate");
    // The template name is part of every message.
    const std::string msg = error_of([] { tl::chat_template("{{ }}", "chat template (my/tokenizer_config.json)"); });
    BOOST_TEST(msg.rfind("tinylm: chat template (my/tokenizer_config.json), line 1, column 4:", 0) == 0);
}

BOOST_AUTO_TEST_SUITE_END()
