// examples/common/cli_checks.hpp: the validators every program's numeric flags use (ranges that say what the
// flag means, integers never wrapped or saturated, floats finite), the one-line error text, the output-folder
// check and the text check. The programs' own answers are in docs/reliability.md (reliability_bad_input).
#include <cli_checks.hpp>

#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <fstream>
#include <new>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

namespace fs = std::filesystem;

namespace {

// Parses `--value TEXT` into a T checked by `validator`; returns CLI11's one-line failure message ("" on success).
template <class T>
std::string parse(T& value, CLI::Validator validator, const std::string& text) {
    CLI::App app{"test"};
    recipes::one_line_errors(app);
    app.add_option("--value", value, "a value")->check(std::move(validator));
    std::vector<std::string> args = {text, "--value"}; // CLI11 reads the vector from the back
    try {
        app.parse(args);
    } catch (const CLI::ParseError& e) {
        std::ostringstream out, err;
        app.exit(e, out, err); // what the program prints
        return err.str();
    }
    return "";
}

} // namespace

BOOST_AUTO_TEST_SUITE(cli_checks)

BOOST_AUTO_TEST_CASE(at_least_says_the_rule_and_the_meaning) {
    long long steps = 0;
    BOOST_TEST(parse(steps, recipes::at_least(1LL, "optimizer steps"), "20").empty());
    BOOST_TEST(steps == 20);
    const std::string m = parse(steps, recipes::at_least(1LL, "optimizer steps"), "0");
    BOOST_TEST(m.find("must be at least 1 (optimizer steps), not 0") != std::string::npos, m);
    BOOST_TEST(m.starts_with("error: --value: "), m);
    BOOST_TEST(m.ends_with("(--help lists the options)\n"), m);
    BOOST_TEST(m.find('\n') == m.size() - 1, m); // one line
}

BOOST_AUTO_TEST_CASE(integers_are_never_wrapped_or_saturated) {
    long long steps = 0;
    std::string m = parse(steps, recipes::at_least(1LL, "optimizer steps"), "99999999999999999999");
    BOOST_TEST(m.find("is too large (at most 9223372036854775807)") != std::string::npos, m);
    int rank = 0;
    m = parse(rank, recipes::in_range(1, 64, "LoRA rank"), "4294967297"); // 2^32 + 1 would wrap to 1
    BOOST_TEST(m.find("is too large (at most 2147483647)") != std::string::npos, m);
    m = parse(rank, recipes::in_range(1, 64, "LoRA rank"), "8x");
    BOOST_TEST(m.find("'8x' is not a whole number") != std::string::npos, m);
    m = parse(rank, recipes::in_range(1, 64, "LoRA rank"), "65");
    BOOST_TEST(m.find("must be between 1 and 64 (LoRA rank), not 65") != std::string::npos, m);
    BOOST_TEST(parse(rank, recipes::in_range(1, 64, "LoRA rank"), "+64").empty());
    BOOST_TEST(rank == 64);
    std::size_t count = 0;
    m = parse(count, recipes::at_least(std::size_t{1}, "rows"), "-1"); // no wrap to 2^64 - 1
    BOOST_TEST(m.find("must be at least 1 (rows), not -1") != std::string::npos, m);
}

BOOST_AUTO_TEST_CASE(floats_must_be_finite_and_bounds_can_be_exclusive) {
    double lr = 0;
    BOOST_TEST(parse(lr, recipes::above(0.0, "peak learning rate"), "3e-4").empty());
    BOOST_TEST(lr == 3e-4);
    std::string m = parse(lr, recipes::above(0.0, "peak learning rate"), "0");
    BOOST_TEST(m.find("must be above 0 (peak learning rate), not 0") != std::string::npos, m);
    for (const std::string bad : {"nan", "inf", "1e999"}) {
        m = parse(lr, recipes::above(0.0, "peak learning rate"), bad);
        BOOST_TEST(m.find("is out of range") != std::string::npos, bad + ": " + m);
    }
    m = parse(lr, recipes::above(0.0, "peak learning rate"), "fast");
    BOOST_TEST(m.find("'fast' is not a number") != std::string::npos, m);
    double fraction = 0;
    m = parse(fraction, recipes::in_range(0.0, 1.0, "share of documents in val.bin"), "2");
    BOOST_TEST(m.find("must be between 0 and 1 (share of documents in val.bin), not 2") != std::string::npos, m);
}

BOOST_AUTO_TEST_CASE(error_line_is_one_line_without_the_library_prefix) {
    BOOST_TEST(recipes::error_line(tl::error("tinylm: first\nsecond\n")) == "error: first; second");
    BOOST_TEST(recipes::error_line(std::bad_alloc()) == "error: out of memory (a smaller --batch, context or model "
                                                        "needs less)");
    const std::filesystem::filesystem_error fe("copy", "/a", "/b", std::make_error_code(std::errc::permission_denied));
    BOOST_TEST(recipes::error_line(fe) == "error: /a -> /b: Permission denied");
}

BOOST_AUTO_TEST_CASE(prepare_out_dir_creates_or_refuses_naming_the_flag) {
    const fs::path root = fs::temp_directory_path() / ("tinylm_test_cli_checks_" + std::to_string(::getpid()));
    fs::remove_all(root);
    recipes::prepare_out_dir(root / "a" / "b", "--out"); // parents too
    BOOST_TEST(fs::is_directory(root / "a" / "b"));
    BOOST_TEST(fs::is_empty(root / "a" / "b")); // the write probe is gone
    std::ofstream(root / "file") << "x";
    try {
        recipes::prepare_out_dir(root / "file", "--out");
        BOOST_FAIL("a file given as --out was accepted");
    } catch (const tl::error& e) {
        BOOST_TEST(std::string(e.what()).find("--out: " + (root / "file").string() + " is a file, not a folder") !=
                   std::string::npos);
    }
    fs::remove_all(root);
}

BOOST_AUTO_TEST_CASE(check_is_text_names_the_first_bad_byte) {
    recipes::check_is_text("привет, мир\n", "corpus.txt", "--input"); // UTF-8 text passes
    for (const auto& [bytes, at] : {std::pair<std::string, int>{std::string("ab\0cd", 5), 2}, {"abc\xff", 3}}) {
        try {
            recipes::check_is_text(bytes, "junk.bin", "--input");
            BOOST_FAIL("binary accepted");
        } catch (const tl::error& e) {
            const std::string m = e.what();
            BOOST_TEST(m.find("--input: junk.bin is not UTF-8 text (byte " + std::to_string(at) + ")") !=
                           std::string::npos,
                       m);
        }
    }
}

BOOST_AUTO_TEST_SUITE_END()
