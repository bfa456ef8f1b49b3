// train/{tensorboard,jsonl_log,progress,report}.hpp, core/svg_plot.hpp: CRC-32C vectors, event files read back by an
// independent TFRecord + protobuf reader written here, JSONL lines, progress lines, the SVG/Markdown report.
// The case tensorboard/reference_files also writes the files that tests/reference/read_tensorboard.py reads
// with TensorBoard's own loader (ctest -L torch, test tensorboard_reader).
#include <tinylm/core/svg_plot.hpp>
#include <tinylm/train/jsonl_log.hpp>
#include <tinylm/train/progress.hpp>
#include <tinylm/train/report.hpp>
#include <tinylm/train/tensorboard.hpp>

#include <boost/test/unit_test.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

using namespace tl;
namespace fs = std::filesystem;

namespace {

struct temp_dir {
    fs::path path;
    explicit temp_dir(const std::string& name)
        : path(fs::temp_directory_path() / ("tinylm_test_logging_" + name + "_" + std::to_string(::getpid()))) {
        fs::remove_all(path);
        fs::create_directories(path);
    }
    ~temp_dir() { fs::remove_all(path); }
};

std::string read_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::vector<std::string> split_lines(const std::string& s) {
    std::vector<std::string> lines;
    std::string line;
    std::istringstream in(s);
    while (std::getline(in, line))
        lines.push_back(line);
    return lines;
}

// A bit-at-a-time CRC-32C, the definition, to check the slice-by-8 tables against.
std::uint32_t crc32c_bitwise(const std::string& s) {
    std::uint32_t crc = 0xffffffffu;
    for (unsigned char c : s) {
        crc ^= c;
        for (int k = 0; k < 8; ++k)
            crc = (crc & 1u) ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
    }
    return ~crc;
}

// ---- an independent reader: TFRecord framing and the protobuf wire format ----------------------------------

std::uint64_t le(const std::string& s, std::size_t at, int n) {
    std::uint64_t v = 0;
    for (int i = 0; i < n; ++i)
        v |= std::uint64_t(static_cast<unsigned char>(s.at(at + i))) << (8 * i);
    return v;
}

std::uint32_t masked(const std::string& s) {
    const std::uint32_t c = crc32c_bitwise(s);
    return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

// Splits a TFRecord file into records, checking both CRCs of each and that nothing trails.
std::vector<std::string> read_records(const fs::path& p) {
    const std::string file = read_file(p);
    std::vector<std::string> records;
    std::size_t at = 0;
    while (at < file.size()) {
        BOOST_REQUIRE_LE(at + 12, file.size());
        const std::uint64_t n = le(file, at, 8);
        BOOST_REQUIRE_EQUAL(le(file, at + 8, 4), masked(file.substr(at, 8)));
        BOOST_REQUIRE_LE(at + 12 + n + 4, file.size());
        std::string data = file.substr(at + 12, n);
        BOOST_REQUIRE_EQUAL(le(file, at + 12 + n, 4), masked(data));
        records.push_back(std::move(data));
        at += 12 + n + 4;
    }
    return records;
}

struct pb_field {
    std::uint32_t number = 0;
    int wire = 0;
    std::uint64_t scalar = 0; // varint, fixed32, fixed64
    std::string bytes;        // length-delimited
};

std::uint64_t read_varint(const std::string& s, std::size_t& at) {
    std::uint64_t v = 0;
    for (int shift = 0;; shift += 7) {
        BOOST_REQUIRE_LT(at, s.size());
        BOOST_REQUIRE_LT(shift, 64);
        const auto b = static_cast<unsigned char>(s[at++]);
        v |= std::uint64_t(b & 0x7f) << shift;
        if (!(b & 0x80)) return v;
    }
}

std::vector<pb_field> parse_message(const std::string& s) {
    std::vector<pb_field> fields;
    std::size_t at = 0;
    while (at < s.size()) {
        const std::uint64_t key = read_varint(s, at);
        pb_field f;
        f.number = std::uint32_t(key >> 3);
        f.wire = int(key & 7);
        switch (f.wire) {
        case 0:
            f.scalar = read_varint(s, at);
            break;
        case 1:
            BOOST_REQUIRE_LE(at + 8, s.size());
            f.scalar = le(s, at, 8);
            at += 8;
            break;
        case 5:
            BOOST_REQUIRE_LE(at + 4, s.size());
            f.scalar = le(s, at, 4);
            at += 4;
            break;
        case 2: {
            const std::uint64_t n = read_varint(s, at);
            BOOST_REQUIRE_LE(at + n, s.size());
            f.bytes = s.substr(at, n);
            at += n;
            break;
        }
        default:
            BOOST_FAIL("unexpected wire type " << f.wire);
        }
        fields.push_back(std::move(f));
    }
    return fields;
}

const pb_field* find(const std::vector<pb_field>& fields, std::uint32_t number) {
    for (const auto& f : fields)
        if (f.number == number) return &f;
    return nullptr;
}

double as_double(std::uint64_t bits) {
    double d;
    std::memcpy(&d, &bits, 8);
    return d;
}
float as_float(std::uint64_t bits) {
    const auto b32 = std::uint32_t(bits);
    float f;
    std::memcpy(&f, &b32, 4);
    return f;
}

// One decoded Event: what the writer puts in.
struct decoded_event {
    double wall_time = 0;
    std::int64_t step = 0;
    std::string file_version;
    std::string tag;
    bool has_simple_value = false;
    float simple_value = 0;
    bool is_text = false;
    std::string text;
};

decoded_event decode_event(const std::string& record) {
    decoded_event e;
    const auto ev = parse_message(record);
    if (const auto* f = find(ev, 1)) {
        BOOST_REQUIRE_EQUAL(f->wire, 1);
        e.wall_time = as_double(f->scalar);
    }
    if (const auto* f = find(ev, 2)) e.step = std::int64_t(f->scalar);
    if (const auto* f = find(ev, 3)) e.file_version = f->bytes;
    if (const auto* f = find(ev, 5)) {
        const auto summary = parse_message(f->bytes);
        BOOST_REQUIRE_EQUAL(summary.size(), 1u);
        BOOST_REQUIRE_EQUAL(summary[0].number, 1u);
        const auto value = parse_message(summary[0].bytes);
        e.tag = find(value, 1)->bytes;
        if (const auto* sv = find(value, 2)) {
            BOOST_REQUIRE_EQUAL(sv->wire, 5);
            e.has_simple_value = true;
            e.simple_value = as_float(sv->scalar);
        }
        if (const auto* tensor = find(value, 8)) {
            const auto* meta = find(value, 9);
            BOOST_REQUIRE(meta);
            const auto plugin_data = parse_message(find(parse_message(meta->bytes), 1)->bytes);
            BOOST_TEST(find(plugin_data, 1)->bytes == "text");
            const auto t = parse_message(tensor->bytes);
            BOOST_TEST(find(t, 1)->scalar == 7u); // DT_STRING
            const auto* shape = find(t, 2);
            BOOST_REQUIRE(shape);
            BOOST_TEST(shape->bytes.empty()); // no dims: a scalar
            int n_strings = 0;
            for (const auto& x : t)
                if (x.number == 8) e.text = x.bytes, ++n_strings;
            BOOST_TEST(n_strings == 1);
            e.is_text = true;
        }
    }
    return e;
}

std::vector<fs::path> event_files(const fs::path& dir) {
    std::vector<fs::path> files;
    for (const auto& entry : fs::directory_iterator(dir))
        if (entry.path().filename().string().rfind("events.out.tfevents.", 0) == 0) files.push_back(entry.path());
    std::sort(files.begin(), files.end());
    return files;
}

std::string expect_error(const auto& fn) {
    try {
        fn();
    } catch (const tl::error& e) {
        return e.what();
    }
    return "";
}

} // namespace

// ---- CRC-32C ---------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_SUITE(crc32c_checks)

BOOST_AUTO_TEST_CASE(known_vectors) {
    BOOST_TEST(tl::crc32c("123456789") == 0xE3069283u);
    BOOST_TEST(tl::crc32c("") == 0u);
    // RFC 3720 (iSCSI) appendix B.4.
    BOOST_TEST(tl::crc32c(std::string(32, '\0')) == 0x8A9136AAu);
    BOOST_TEST(tl::crc32c(std::string(32, '\xff')) == 0x62A8AB43u);
    std::string up, down;
    for (int i = 0; i < 32; ++i)
        up.push_back(char(i)), down.push_back(char(31 - i));
    BOOST_TEST(tl::crc32c(up) == 0x46DD794Eu);
    BOOST_TEST(tl::crc32c(down) == 0x113FDB5Cu);
    // Masked values as TensorBoard's own Python implementation computes them.
    BOOST_TEST(tl::masked_crc32c("123456789") == 0xC78AB0E5u);
    BOOST_TEST(tl::masked_crc32c(std::string(8, '\0')) == 0x07980329u);
}

BOOST_AUTO_TEST_CASE(slice_by_8_matches_bitwise_and_extends) {
    std::string s;
    std::uint32_t x = 12345;
    for (int n = 0; n < 300; ++n) {
        BOOST_TEST_REQUIRE(tl::crc32c(s) == crc32c_bitwise(s), "length " << n);
        for (std::size_t cut : {std::size_t(0), s.size() / 3, s.size()}) {
            const auto a = s.substr(0, cut), b = s.substr(cut);
            BOOST_TEST_REQUIRE(tl::crc32c_extend(tl::crc32c(a), b.data(), b.size()) == tl::crc32c(s));
        }
        x = x * 1103515245u + 12345u;
        s.push_back(char(x >> 16));
    }
}

BOOST_AUTO_TEST_CASE(utf8_repair) {
    BOOST_TEST(tl::is_valid_utf8("Война и мир"));
    BOOST_TEST(!tl::is_valid_utf8("\xd0"));         // cut inside a character
    BOOST_TEST(!tl::is_valid_utf8("\xc0\xaf"));     // overlong
    BOOST_TEST(!tl::is_valid_utf8("\xed\xa0\x80")); // surrogate
    BOOST_TEST(tl::to_valid_utf8("мир\xd0") == "мир\xEF\xBF\xBD");
    BOOST_TEST(tl::to_valid_utf8(std::string("a\0b", 3)) == "ab");
}

BOOST_AUTO_TEST_SUITE_END()

// ---- TensorBoard event files -----------------------------------------------------------------------------

BOOST_AUTO_TEST_SUITE(tensorboard)

BOOST_AUTO_TEST_CASE(round_trip_through_an_independent_reader) {
    temp_dir dir("tb");
    const double before = tensorboard_writer::unix_time();
    tensorboard_writer w(dir.path / "run");
    w.scalar("train/loss", 2.5, 1);
    w.scalar("train/loss", 1.25, 2);
    w.scalar("lr", 3e-4, 2, 1700000000.5);
    w.scalar("big_step", -7.0, std::int64_t(1) << 40);
    w.scalar("negative_step", 0.0, -3);
    w.text("samples", "**Все мысли**, которые имеют огромные последствия\n\n- a list", 100);
    w.text("cut", "мир\xd0", 101); // a sample cut inside a character
    const double after = tensorboard_writer::unix_time();

    // Written through to the file without flush() or closing.
    const auto files = event_files(dir.path / "run");
    BOOST_REQUIRE_EQUAL(files.size(), 1u);
    BOOST_TEST(files[0] == w.path());
    const std::string name = files[0].filename().string();
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    const std::string prefix = "events.out.tfevents.";
    const std::string stamp = name.substr(prefix.size(), name.find('.', prefix.size()) - prefix.size());
    BOOST_TEST(std::abs(std::stod(stamp) - before) <= 2.0);
    BOOST_TEST(name == prefix + stamp + "." + std::string(host));

    const auto records = read_records(files[0]);
    BOOST_REQUIRE_EQUAL(records.size(), 8u);
    std::vector<decoded_event> ev;
    for (const auto& r : records)
        ev.push_back(decode_event(r));
    BOOST_TEST(ev[0].file_version == "brain.Event:2");
    BOOST_TEST(ev[0].wall_time >= before - 1);
    BOOST_TEST(ev[0].wall_time <= after + 1);
    BOOST_TEST(ev[0].tag.empty());

    BOOST_TEST(ev[1].tag == "train/loss");
    BOOST_TEST(ev[1].step == 1);
    BOOST_TEST(ev[1].has_simple_value);
    BOOST_TEST(ev[1].simple_value == 2.5f);
    BOOST_TEST(ev[1].wall_time >= before - 1);
    BOOST_TEST(ev[2].simple_value == 1.25f);
    BOOST_TEST(ev[3].tag == "lr");
    BOOST_TEST(ev[3].simple_value == float(3e-4));
    BOOST_TEST(ev[3].wall_time == 1700000000.5);
    BOOST_TEST(ev[4].step == std::int64_t(1) << 40);
    BOOST_TEST(ev[4].simple_value == -7.0f);
    BOOST_TEST(ev[5].step == -3);
    BOOST_TEST(ev[6].is_text);
    BOOST_TEST(!ev[6].has_simple_value);
    BOOST_TEST(ev[6].tag == "samples");
    BOOST_TEST(ev[6].step == 100);
    BOOST_TEST(ev[6].text == "**Все мысли**, которые имеют огромные последствия\n\n- a list");
    BOOST_TEST(ev[7].text == "мир\xEF\xBF\xBD");
    w.flush();
    BOOST_TEST(read_records(files[0]).size() == 8u);
}

BOOST_AUTO_TEST_CASE(writers_never_share_a_file) {
    temp_dir dir("tb_two");
    tensorboard_writer a(dir.path);
    tensorboard_writer b(dir.path); // same second, same host
    a.scalar("x", 1, 1);
    b.scalar("x", 2, 1);
    BOOST_TEST(a.path() != b.path());
    BOOST_TEST(event_files(dir.path).size() == 2u);
    BOOST_TEST(read_records(a.path()).size() == 2u);
    BOOST_TEST(read_records(b.path()).size() == 2u);
}

BOOST_AUTO_TEST_CASE(errors_name_the_path_and_the_problem) {
    temp_dir dir("tb_err");
    std::ofstream(dir.path / "not_a_dir") << "x";
    const auto msg = expect_error([&] { tensorboard_writer w(dir.path / "not_a_dir"); });
    BOOST_TEST(msg.find("not_a_dir") != std::string::npos, msg);
    BOOST_TEST(msg.find("log directory") != std::string::npos, msg);
    tensorboard_writer w(dir.path / "ok");
    const auto tag_msg = expect_error([&] { w.scalar("", 1.0, 1); });
    BOOST_TEST(tag_msg.find("tag") != std::string::npos, tag_msg);
    BOOST_TEST(tag_msg.find(w.path().string()) != std::string::npos, tag_msg);
}

// Writes events and the values TensorBoard must read back. With TINYLM_TB_REFERENCE_DIR set (the
// tensorboard_reader ctest), the files stay there for tests/reference/read_tensorboard.py.
BOOST_AUTO_TEST_CASE(reference_files) {
    const char* env = std::getenv("TINYLM_TB_REFERENCE_DIR");
    std::optional<temp_dir> tmp;
    fs::path root;
    if (env && *env) {
        root = env;
        fs::remove_all(root);
        fs::create_directories(root);
    } else {
        tmp.emplace("tb_ref");
        root = tmp->path;
    }
    const fs::path logdir = root / "logs";
    nlohmann::ordered_json expected;
    expected["wall_time_min"] = tensorboard_writer::unix_time() - 1;
    {
        tensorboard_writer w(logdir);
        const std::vector<std::string> scalar_tags = {"loss", "val_loss", "lr", "grad_norm", "tokens_per_s"};
        for (std::int64_t step = 1; step <= 60; ++step) {
            for (std::size_t k = 0; k < scalar_tags.size(); ++k) {
                if (scalar_tags[k] == "val_loss" && step % 20 != 0) continue;
                const double v = k == 2   ? 3e-4 * std::min(1.0, double(step) / 10)
                                 : k == 4 ? 37063.0 + double(step)
                                          : 5.0 * std::exp(-0.05 * double(step)) + 0.1 * double(k);
                w.scalar(scalar_tags[k], v, step);
                expected["scalars"][scalar_tags[k]].push_back({step, double(float(v))});
            }
        }
        w.scalar("edge/tiny", 1e-30, 0);
        w.scalar("edge/huge", 3e38, std::int64_t(1) << 40);
        w.scalar("edge/negative", -2.75, 7);
        expected["scalars"]["edge/tiny"].push_back({0, double(float(1e-30))});
        expected["scalars"]["edge/huge"].push_back({std::int64_t(1) << 40, double(float(3e38))});
        expected["scalars"]["edge/negative"].push_back({7, -2.75});
        const std::vector<std::pair<std::string, std::string>> texts = {
            {"samples", "**Сила войска зависит от его духа** и от того, что...\n\n*step 20*"},
            {"samples", "Нет, жизнь не кончена — `code`, <b>html</b> & | pipes |"},
            {"notes", "plain ascii"},
        };
        std::int64_t step = 20;
        for (const auto& [tag, text] : texts) {
            w.text(tag, text, step);
            expected["texts"][tag].push_back({step, text});
            step += 20;
        }
        w.text("samples", "обрезано\xd0", 80);
        expected["texts"]["samples"].push_back({80, "обрезано\xEF\xBF\xBD"});
        w.flush();
        expected["event_file"] = w.path().filename().string();
    }
    expected["wall_time_max"] = tensorboard_writer::unix_time() + 1;
    std::ofstream(root / "expected.json") << expected.dump(2) << "\n";

    // Our own reader agrees with what we expect.
    const auto files = event_files(logdir);
    BOOST_REQUIRE_EQUAL(files.size(), 1u);
    std::map<std::string, std::vector<std::pair<std::int64_t, double>>> scalars;
    std::map<std::string, std::vector<std::pair<std::int64_t, std::string>>> texts;
    for (const auto& r : read_records(files[0])) {
        const auto e = decode_event(r);
        if (e.has_simple_value) scalars[e.tag].emplace_back(e.step, double(e.simple_value));
        if (e.is_text) texts[e.tag].emplace_back(e.step, e.text);
    }
    for (const auto& [tag, points] : expected["scalars"].items()) {
        BOOST_REQUIRE_EQUAL(scalars[tag].size(), points.size());
        for (std::size_t i = 0; i < points.size(); ++i) {
            BOOST_TEST(scalars[tag][i].first == points[i][0].get<std::int64_t>());
            BOOST_TEST(scalars[tag][i].second == points[i][1].get<double>());
        }
    }
    for (const auto& [tag, items] : expected["texts"].items()) {
        BOOST_REQUIRE_EQUAL(texts[tag].size(), items.size());
        for (std::size_t i = 0; i < items.size(); ++i)
            BOOST_TEST(texts[tag][i].second == items[i][1].get<std::string>());
    }
}

BOOST_AUTO_TEST_SUITE_END()

// ---- JSONL -------------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_SUITE(jsonl)

BOOST_AUTO_TEST_CASE(lines_are_objects_with_step_first) {
    temp_dir dir("jsonl");
    const auto path = dir.path / "sub" / "metrics.jsonl";
    {
        jsonl_log log(path);
        log.write(10, {{"loss", 2.5}, {"lr", 3e-4f}, {"tokens", 4096}, {"tokens_per_s", 37063.5}});
        // Written through before the log is closed.
        BOOST_TEST(split_lines(read_file(path)).size() == 1u);
        const std::string sample = "Маша вошла в комнату \"в кавычках\"\n";
        log.write(20, {{"prompt", "Маша"}, {"sample", sample}, {"nan_loss", NAN}, {"inf", INFINITY}, {"ok", true}});
        log.write(30, {{"cut", std::string_view("мир\xd0")}});
        const auto msg = expect_error([&] { log.write(40, {{"step", 1}}); });
        BOOST_TEST(msg.find("metrics.jsonl") != std::string::npos, msg);
    }
    const std::string content = read_file(path);
    BOOST_TEST(content.back() == '\n');
    const auto lines = split_lines(content);
    BOOST_REQUIRE_EQUAL(lines.size(), 3u);
    BOOST_TEST(lines[0].rfind("{\"step\":10,\"loss\":2.5,\"lr\":", 0) == 0, lines[0]);
    const auto a = nlohmann::json::parse(lines[0]);
    BOOST_TEST(a["step"].get<int>() == 10);
    BOOST_TEST(a["lr"].get<double>() == double(3e-4f));
    BOOST_TEST(a["tokens"].is_number_integer());
    BOOST_TEST(a["tokens_per_s"].get<double>() == 37063.5);
    const auto b = nlohmann::json::parse(lines[1]);
    BOOST_TEST(b["sample"].get<std::string>() == "Маша вошла в комнату \"в кавычках\"\n");
    BOOST_TEST(b["nan_loss"].is_null());
    BOOST_TEST(b["inf"].is_null());
    BOOST_TEST(b["ok"].get<bool>());
    BOOST_TEST(nlohmann::json::parse(lines[2])["cut"].get<std::string>() == "мир\xEF\xBF\xBD");
}

BOOST_AUTO_TEST_CASE(append_ends_a_line_cut_by_a_crash) {
    temp_dir dir("jsonl_append");
    const auto path = dir.path / "metrics.jsonl";
    std::ofstream(path) << "{\"step\":1,\"loss\":3.0}\n{\"step\":2,\"lo";
    {
        jsonl_log log(path, jsonl_mode::append);
        log.write(2, {{"loss", 2.0}});
    }
    const auto lines = split_lines(read_file(path));
    BOOST_REQUIRE_EQUAL(lines.size(), 3u);
    BOOST_TEST(lines[0] == "{\"step\":1,\"loss\":3.0}");
    BOOST_TEST(lines[2] == "{\"step\":2,\"loss\":2.0}");
    {
        jsonl_log log(path, jsonl_mode::append); // ends in a newline: nothing added
        log.write(3, {{"loss", 1.5}});
    }
    BOOST_TEST(split_lines(read_file(path)).size() == 4u);
    jsonl_log fresh(path); // truncate
    BOOST_TEST(read_file(path).empty());
}

BOOST_AUTO_TEST_CASE(unwritable_path_is_named) {
    temp_dir dir("jsonl_err");
    fs::create_directories(dir.path / "a_dir");
    const auto msg = expect_error([&] { jsonl_log log(dir.path / "a_dir"); });
    BOOST_TEST(msg.find("a_dir") != std::string::npos, msg);
}

BOOST_AUTO_TEST_SUITE_END()

// ---- progress ------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_SUITE(progress)

BOOST_AUTO_TEST_CASE(durations) {
    char buf[32];
    format_duration(buf, sizeof buf, 0);
    BOOST_TEST(std::string(buf) == "0:00");
    format_duration(buf, sizeof buf, 125.4);
    BOOST_TEST(std::string(buf) == "2:05");
    format_duration(buf, sizeof buf, 3 * 3600 + 62);
    BOOST_TEST(std::string(buf) == "3:01:02");
    format_duration(buf, sizeof buf, NAN);
    BOOST_TEST(std::string(buf) == "--:--");
}

BOOST_AUTO_TEST_CASE(plain_lines_every_n_steps) {
    std::FILE* f = std::tmpfile();
    BOOST_REQUIRE(f);
    {
        progress_bar bar(100, {.plain_every = 25}, f); // a file is not a TTY
        BOOST_TEST(!bar.is_tty());
        for (std::int64_t s = 1; s <= 100; ++s)
            bar.update({.step = s, .loss = 5.0 - 0.03 * double(s), .lr = 3e-4, .tokens_per_s = 1000}, 0.5 * double(s));
        bar.message("validation loss 1.1568");
        bar.update({.step = 100, .loss = 2.0}, 50); // the last step again: not repeated
        bar.finish();
    }
    std::fflush(f);
    std::rewind(f);
    std::string out;
    char chunk[512];
    for (std::size_t n; (n = std::fread(chunk, 1, sizeof chunk, f)) > 0;)
        out.append(chunk, n);
    std::fclose(f);
    BOOST_TEST(out.find('\r') == std::string::npos);
    BOOST_TEST(out.find('\x1b') == std::string::npos);
    const auto lines = split_lines(out);
    BOOST_REQUIRE_EQUAL(lines.size(), 6u);
    BOOST_TEST(lines[0] == "step   1/100  loss 4.9700  lr 3.00e-04  1000 tok/s  elapsed 0:01  ETA 0:50");
    BOOST_TEST(lines[1] == "step  25/100  loss 4.2500  lr 3.00e-04  1000 tok/s  elapsed 0:13  ETA 0:38");
    BOOST_TEST(lines[2].rfind("step  50/100  loss 3.5000", 0) == 0, lines[2]);
    BOOST_TEST(lines[3].rfind("step  75/100", 0) == 0, lines[3]);
    BOOST_TEST(lines[4] == "step 100/100  loss 2.0000  lr 3.00e-04  1000 tok/s  elapsed 0:50  ETA 0:00");
    BOOST_TEST(lines[5] == "validation loss 1.1568");
}

BOOST_AUTO_TEST_CASE(resume_counts_only_new_steps_and_optional_fields_are_left_out) {
    std::FILE* f = std::tmpfile();
    BOOST_REQUIRE(f);
    progress_bar bar(1000, {.plain_every = 100, .first_step = 500}, f);
    // 100 steps in 10 s: 400 left take 40 s.
    const auto line = bar.format({.step = 600, .loss = 1.0}, 10.0, false);
    BOOST_TEST(line == "step  600/1000  loss 1.0000  elapsed 0:10  ETA 0:40");
    const auto nan_line = bar.format({.step = 601, .loss = NAN}, 10.0, false);
    BOOST_TEST(nan_line.find("loss nan") != std::string_view::npos, nan_line);
    std::fclose(f);
}

BOOST_AUTO_TEST_CASE(tty_mode_redraws_one_line) {
    std::FILE* f = std::tmpfile();
    BOOST_REQUIRE(f);
    {
        progress_bar bar(10, {.mode = progress_mode::tty, .redraw_seconds = 1.0, .bar_width = 10}, f);
        BOOST_TEST(bar.is_tty());
        for (std::int64_t s = 1; s <= 10; ++s)
            bar.update({.step = s, .loss = 1.0}, 0.25 * double(s));
    }
    std::rewind(f);
    std::string out;
    char chunk[1024];
    for (std::size_t n; (n = std::fread(chunk, 1, sizeof chunk, f)) > 0;)
        out.append(chunk, n);
    std::fclose(f);
    // Drawn at 0.25 s, 1.25 s, 2.25 s and the last step (2.5 s): 4 redraws, one final newline.
    std::size_t redraws = 0;
    for (char c : out)
        redraws += c == '\r';
    BOOST_TEST(redraws == 4u);
    BOOST_TEST(out.back() == '\n');
    BOOST_TEST(std::count(out.begin(), out.end(), '\n') == 1);
    BOOST_TEST(out.find("step  5/10 [#####-----]  50%  loss 1.0000  ETA 0:01\x1b[K") != std::string::npos, out);
    BOOST_TEST(out.find("step 10/10 [##########] 100%") != std::string::npos, out);
}

BOOST_AUTO_TEST_SUITE_END()

// ---- SVG plot and report --------------------------------------------------------------------------------

BOOST_AUTO_TEST_SUITE(report)

BOOST_AUTO_TEST_CASE(nice_ticks_cover_the_range) {
    const auto t = nice_ticks(0.93, 4.71, 7);
    BOOST_TEST(t.front() <= 0.93);
    BOOST_TEST(t.back() >= 4.71);
    BOOST_TEST(t.size() >= 3u);
    BOOST_TEST(t.size() <= 8u);
    BOOST_TEST(std::abs((t[1] - t[0]) - 1.0) < 1e-12);
    const auto s = nice_ticks(0, 1500, 9);
    BOOST_TEST(s.front() == 0.0);
    BOOST_TEST(s.back() == 1600.0); // spacing 200
    const auto flat = nice_ticks(2.0, 2.0);
    BOOST_TEST(flat.front() < 2.0);
    BOOST_TEST(flat.back() > 2.0);
    BOOST_TEST(format_tick(0.5, 0.5) == "0.5");
    BOOST_TEST(format_tick(1000, 200) == "1000");
    BOOST_TEST(format_tick(0.25, 0.05) == "0.25");
}

BOOST_AUTO_TEST_CASE(svg_has_axes_series_and_escaped_text) {
    plot_series a{.name = "train <&>", .x = {0, 1, 2, 3, 4}, .y = {3, 2, NAN, 1.5, 1.2}};
    plot_series b{.name = "val", .x = {2, 4}, .y = {2.2, 1.4}, .markers = true};
    const std::string svg = svg_line_plot({a, b}, {.title = "Loss", .x_label = "step", .y_label = "loss"});
    BOOST_TEST(svg.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0) == 0);
    BOOST_TEST(svg.find("</svg>") == svg.size() - 7);
    BOOST_TEST(svg.find("train &lt;&amp;&gt;") != std::string::npos);
    BOOST_TEST(svg.find("train <&>") == std::string::npos);
    BOOST_TEST(svg.find(">step</text>") != std::string::npos);
    BOOST_TEST(svg.find("rotate(-90)") != std::string::npos);
    // The NaN splits the train line into a 2-point polyline and a 2-point one; val gets its own polyline.
    std::size_t polylines = 0;
    for (std::size_t at = 0; (at = svg.find("<polyline", at)) != std::string::npos; ++at)
        ++polylines;
    BOOST_TEST(polylines == 3u);
    BOOST_TEST(svg.find("nan") == std::string::npos);
    // Balanced elements: every opened <text> is closed.
    std::size_t open = 0, close = 0;
    for (std::size_t at = 0; (at = svg.find("<text", at)) != std::string::npos; ++at)
        ++open;
    for (std::size_t at = 0; (at = svg.find("</text>", at)) != std::string::npos; ++at)
        ++close;
    BOOST_TEST(open == close);
    BOOST_TEST(open > 8u);
    const std::string empty = svg_line_plot({});
    BOOST_TEST(empty.find("no data") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(markdown_escaping_shows_text_as_written) {
    BOOST_TEST(markdown_escape("a *b* _c_ `d` <e> #f |g|") == "a \\*b\\* \\_c\\_ \\`d\\` \\<e\\> \\#f \\|g\\|");
    BOOST_TEST(markdown_escape("- item") == "\\- item");
    BOOST_TEST(markdown_escape("a - b") == "a - b");
    BOOST_TEST(markdown_escape("12. x") == "12\\. x");
    BOOST_TEST(markdown_escape("v1.5") == "v1.5");
    BOOST_TEST(markdown_escape("a\nb", true) == "a  \n> b");
}

BOOST_AUTO_TEST_CASE(report_files) {
    temp_dir dir("report");
    run_report r("tiny <run>");
    r.add_summary("parameters", "125k");
    r.add_summary("preset", "tiny | cpu");
    for (std::int64_t s = 1; s <= 2500; ++s)
        r.add_train_loss(s, 5.0 * std::exp(-0.002 * double(s)) + 1.0);
    r.add_train_loss(2501, NAN);
    for (std::int64_t s = 500; s <= 2500; s += 500)
        r.add_val_loss(s, 5.2 * std::exp(-0.002 * double(s)) + 1.1);
    r.add_sample("Сила войска зависит от его духа", " и *силы* воли.", 1000);
    r.add_sample("Чтобы жить честно", "\n- надо\xd0", 1000);
    r.add_sample("Любовь мешает смерти", ", потому что", -1);
    const auto md_path = r.write(dir.path / "out");
    BOOST_TEST(md_path == dir.path / "out" / "report.md");
    BOOST_TEST(!fs::exists(dir.path / "out" / "report.md.tmp"));
    const std::string md = read_file(md_path);
    const std::string svg = read_file(dir.path / "out" / "report_loss.svg");
    BOOST_TEST(md.rfind("# tiny \\<run\\>\n", 0) == 0, md);
    BOOST_TEST(md.find("| preset | tiny \\| cpu |") != std::string::npos, md);
    BOOST_TEST(md.find("![Train and validation loss against step](report_loss.svg)") != std::string::npos, md);
    BOOST_TEST(md.find("Final train loss: ") != std::string::npos, md);
    BOOST_TEST(md.find("Final validation loss: ") != std::string::npos, md);
    BOOST_TEST(md.find("### Step 1000") != std::string::npos, md);
    BOOST_TEST(md.find("### After training") != std::string::npos, md);
    BOOST_TEST(md.find("**Prompt:** Сила войска зависит от его духа\n\n> Сила войска зависит от его духа и "
                       "\\*силы\\* воли.\n") != std::string::npos,
               md);
    BOOST_TEST(md.find("> Чтобы жить честно  \n> \\- надо\xEF\xBF\xBD\n") != std::string::npos, md);
    BOOST_TEST(tl::is_valid_utf8(md));
    BOOST_TEST(svg.find("train (mean of 3 points)") != std::string::npos); // 2501 points, at most 1000
    BOOST_TEST(svg.find(">validation</text>") != std::string::npos);
    BOOST_TEST(svg.find(">step</text>") != std::string::npos);
    BOOST_TEST(svg.find("</svg>") != std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()
