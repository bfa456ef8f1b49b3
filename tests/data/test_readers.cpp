// data/reader.hpp and data/utf8.hpp: repair of broken bytes, paragraphs of text files, JSONL and CSV columns.
#include "../support/data.hpp"

#include <tinylm/core/rng.hpp>
#include <tinylm/data/reader.hpp>
#include <tinylm/data/utf8.hpp>

#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <fstream>
#include <unistd.h>

using namespace tl::data;
using namespace std::string_literals;
namespace fs = std::filesystem;

namespace {

// A scratch folder for this process, removed at exit.
fs::path scratch(const std::string& name) {
    struct folder {
        fs::path path = fs::temp_directory_path() / ("tinylm_test_data_" + std::to_string(::getpid()));
        folder() { fs::create_directories(path); }
        ~folder() {
            std::error_code ec;
            fs::remove_all(path, ec);
        }
    };
    static const folder f;
    return f.path / name;
}
void write_file(const fs::path& p, std::string_view bytes) {
    std::ofstream f(p, std::ios::binary);
    f.write(bytes.data(), std::streamsize(bytes.size()));
}
std::vector<record> read_all(reader& r) {
    std::vector<record> out;
    record rec;
    while (r.next(rec))
        out.push_back(rec);
    return out;
}

} // namespace

BOOST_AUTO_TEST_SUITE(readers)

BOOST_AUTO_TEST_CASE(repair_counts_every_kind_of_damage) {
    // BOM, CRLF, lone CR, NUL, a C0 control, a C1 control (U+0085), an invalid byte, a truncated sequence,
    // an overlong '/', a surrogate
    const std::string in = "\xEF\xBB\xBFпри\r\nвет\rA\0B\x07"
                           "C\xC2\x85"
                           "D\xFF"
                           "E\xD0"
                           "F\xC0\xAF"
                           "G\xED\xA0\x80"
                           "H"s;
    std::string out;
    repair_counts c;
    repair_utf8(std::string_view(in.data(), in.size()), out, c);
    BOOST_TEST(c.bom == 1u);
    BOOST_TEST(c.crlf == 1u);
    BOOST_TEST(c.lone_cr == 1u);
    BOOST_TEST(c.nul == 1u);
    BOOST_TEST(c.control == 2u);
    BOOST_TEST(c.invalid_utf8 == 1u + 1u + 2u + 3u); // FF; D0; C0 AF; ED A0 80
    BOOST_TEST(out == "при\nвет\nABCD\uFFFDE\uFFFDF\uFFFD\uFFFDG\uFFFD\uFFFD\uFFFDH");
    // everything repaired is valid: a second pass changes nothing
    std::string again;
    repair_counts c2;
    repair_utf8(out, again, c2);
    BOOST_TEST(again == out);
    BOOST_TEST(c2.invalid_utf8 + c2.nul + c2.control + c2.bom + c2.crlf + c2.lone_cr == 0u);
}

BOOST_AUTO_TEST_CASE(random_bytes_never_crash) {
    std::uint64_t x = 42;
    for (int round = 0; round < 200; ++round) {
        std::string in;
        for (int i = 0; i < 300; ++i) {
            x = tl::mix64(x + 1);
            in.push_back(static_cast<char>(x & 0xFF));
        }
        std::string out;
        repair_counts c;
        repair_utf8(in, out, c);
        std::string again;
        repair_counts c2;
        repair_utf8(out, again, c2);
        BOOST_TEST_REQUIRE(again == out);
    }
}

BOOST_AUTO_TEST_CASE(text_paragraph_modes) {
    const auto blank = scratch("blank.txt");
    write_file(blank, "\xEF\xBB\xBFПервый абзац,\r\nего вторая строка.\r\n\r\n\r\nВторой абзац.\r\n");
    text_reader r1({blank}, {.mode = paragraph_mode::automatic});
    auto recs = read_all(r1);
    BOOST_TEST_REQUIRE(recs.size() == 2u);
    BOOST_TEST(recs[0].text == "Первый абзац,\nего вторая строка.");
    BOOST_TEST(recs[1].text == "Второй абзац.");
    BOOST_TEST(r1.repairs().crlf == 5u);
    BOOST_TEST(r1.repairs().bom == 1u);
    BOOST_TEST(std::string(to_string(r1.modes()[0].second)) == "blank_line");

    const auto indent = scratch("indent.txt");
    write_file(indent, "   Начало первого\nабзаца.\n   Второй\nабзац.\n— Реплика.\n");
    text_reader r2({indent}, {.mode = paragraph_mode::indent});
    recs = read_all(r2);
    BOOST_TEST_REQUIRE(recs.size() == 3u);
    BOOST_TEST(recs[0].text == "   Начало первого\nабзаца.");
    BOOST_TEST(recs[2].text == "— Реплика.");

    text_reader r3({indent}, {.mode = paragraph_mode::line});
    BOOST_TEST(read_all(r3).size() == 5u);
}

BOOST_AUTO_TEST_CASE(long_paragraphs_are_cut_and_memory_bounded) {
    const auto p = scratch("long.txt");
    std::string line;
    for (int i = 0; i < 20000; ++i)
        line += "слово ";
    write_file(p, line + "\n" + line); // two 240 KB lines without a blank line between them
    text_reader r({p}, {.mode = paragraph_mode::blank_line, .max_record_bytes = 16 << 10});
    const auto recs = read_all(r);
    std::size_t total = 0;
    for (const auto& rec : recs) {
        BOOST_TEST_REQUIRE(rec.text.size() <= std::size_t(16 << 10));
        total += rec.text.size();
    }
    BOOST_TEST(total == 2 * line.size());
    BOOST_TEST(r.repairs().invalid_utf8 == 0u); // cuts never split a UTF-8 sequence
}

BOOST_AUTO_TEST_CASE(folders_are_read_in_sorted_order_with_one_document_per_file) {
    const fs::path dir = scratch("folder");
    fs::create_directories(dir / "sub");
    write_file(dir / "b.txt", "Б.\n");
    write_file(dir / "a.txt", "А.\n\nА2.\n");
    write_file(dir / "sub" / "c.txt", "В.\n");
    text_reader r({dir});
    const auto recs = read_all(r);
    BOOST_TEST_REQUIRE(recs.size() == 4u);
    BOOST_TEST(recs[0].text == "А.");
    BOOST_TEST(recs[1].doc == 0u);
    BOOST_TEST(recs[2].text == "Б.");
    BOOST_TEST(recs[2].doc == 1u);
    BOOST_TEST(recs[3].doc == 2u);
    BOOST_CHECK_THROW(text_reader({dir / "missing"}), tl::error);
}

BOOST_AUTO_TEST_CASE(jsonl_field_with_bad_lines_counted) {
    const auto p = scratch("x.jsonl");
    write_file(p, "{\"text\": \"один\\u0000\", \"meta\": {\"t\": \"x\"}}\n"
                  "not json\n"
                  "\n"
                  "{\"other\": 1}\n"
                  "{\"text\": \"два\xFF\"}\r\n");
    jsonl_reader r({p}, "text");
    const auto recs = read_all(r);
    BOOST_TEST_REQUIRE(recs.size() == 2u);
    BOOST_TEST(recs[0].text == "один");
    BOOST_TEST(recs[1].text == "два\uFFFD");
    BOOST_TEST(r.problems().count == 2u);
    BOOST_TEST(r.problems().examples[0].find("x.jsonl:2: not valid JSON") != std::string::npos);
    BOOST_TEST(r.repairs().nul == 1u);
    jsonl_reader nested({p}, "meta.t");
    BOOST_TEST(read_all(nested).size() == 1u);
    jsonl_reader strict({p}, "text", true);
    record rec;
    BOOST_TEST(strict.next(rec));
    BOOST_CHECK_THROW(strict.next(rec), tl::error);
}

BOOST_AUTO_TEST_CASE(csv_column_by_name_and_index) {
    const auto p = scratch("x.csv");
    write_file(p, "id,text,score\r\n1,\"Привет, \"\"мир\"\"\",5\r\n2,\"две\nстроки\",4\r\n3\r\n4,простой,3\r\n");
    csv_reader r({p}, "text");
    const auto recs = read_all(r);
    BOOST_TEST_REQUIRE(recs.size() == 3u);
    BOOST_TEST(recs[0].text == "Привет, \"мир\"");
    BOOST_TEST(recs[1].text == "две\nстроки");
    BOOST_TEST(recs[2].text == "простой");
    BOOST_TEST(r.problems().count == 1u); // the short row "3"
    csv_reader by_index({p}, "2");
    const auto scores = read_all(by_index);
    BOOST_TEST(scores.front().text == "score"); // an index reads the header row as data
    BOOST_CHECK_THROW(csv_reader({p}, "missing").next(const_cast<record&>(recs[0])), tl::error);
}

BOOST_AUTO_TEST_CASE(real_corpus_file_with_control_bytes, tl_test::needs_data("russian_novels/corpus")) {
    const auto dir = tl_test::data_path("russian_novels/corpus");
    // the three files of the corpus with stray control bytes (found with grep -P '[\x00-\x08\x0b\x0c\x0e-\x1f]')
    text_reader r({dir / "Dostoyevsky_PrestupleniyeINakazaniye.txt", dir / "Durova_GodZyznijWPeterburge.txt",
                   dir / "Gorky_ArtamonovBusiness.txt"});
    const auto recs = read_all(r);
    BOOST_TEST(recs.size() > 100u);
    BOOST_TEST(r.repairs().control + r.repairs().nul > 0u);
    BOOST_TEST_MESSAGE("3 files: " << recs.size() << " paragraphs, control " << r.repairs().control << ", NUL "
                                   << r.repairs().nul << ", invalid " << r.repairs().invalid_utf8 << ", CRLF "
                                   << r.repairs().crlf);
}

BOOST_AUTO_TEST_SUITE_END()
