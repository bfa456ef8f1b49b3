// io/safetensors.hpp: round trip, and clear errors on malformed or truncated files.
#include "../support/random.hpp"

#include <tinylm/io/safetensors.hpp>

#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <fstream>

using namespace tl;
using namespace tl::test;

namespace {
struct temp_dir {
    std::filesystem::path path = std::filesystem::temp_directory_path() / ("tinylm_test_" + std::to_string(::getpid()));
    temp_dir() { std::filesystem::create_directories(path); }
    ~temp_dir() { std::filesystem::remove_all(path); }
};
void write_bytes(const std::filesystem::path& p, const std::string& bytes) {
    std::ofstream(p, std::ios::binary) << bytes;
}
std::string expect_error(const std::filesystem::path& p) {
    try {
        safetensors_reader r(p);
    } catch (const tl::error& e) {
        return e.what();
    }
    return "";
}
} // namespace

BOOST_AUTO_TEST_SUITE(safetensors)

BOOST_AUTO_TEST_CASE(round_trip) {
    temp_dir dir;
    auto w = random_tensor<float>({3, 4}, 1);
    owned<std::int64_t> ids({5});
    ids.data = {1, -2, 3, 40000000000, 5};
    safetensors_writer out;
    out.add<float>("w", w.cv());
    out.add<std::int64_t>("ids", ids.cv());
    out.add_metadata("format", "pt");
    out.save(dir.path / "a.safetensors");
    BOOST_TEST(!std::filesystem::exists(dir.path / "a.safetensors.tmp"));
    const safetensors_reader in(dir.path / "a.safetensors");
    BOOST_TEST(in.metadata().at("format") == "pt");
    BOOST_TEST(in.info("w").dtype == "F32");
    BOOST_TEST(in.read_all<float>("w") == w.data);
    BOOST_TEST(in.read_all<std::int64_t>("ids") == ids.data);
    owned<double> wd({3, 4});
    in.read<double>("w", wd);
    BOOST_TEST(wd.data[5] == double(w.data[5]));
    owned<float> wrong({4, 3});
    BOOST_CHECK_THROW(in.read<float>("w", wrong), tl::error);
    BOOST_CHECK_THROW(in.info("missing"), tl::error);
}

BOOST_AUTO_TEST_CASE(malformed_files_name_the_problem) {
    temp_dir dir;
    const auto p = dir.path / "bad.safetensors";
    write_bytes(p, "abc");
    BOOST_TEST(expect_error(p).find("too short") != std::string::npos);
    write_bytes(p, std::string("\xff\x00\x00\x00\x00\x00\x00\x00{}", 10));
    BOOST_TEST(expect_error(p).find("truncated") != std::string::npos);
    const std::string bad_json = "{not json";
    write_bytes(p, std::string(1, char(bad_json.size())) + std::string(7, '\0') + bad_json);
    BOOST_TEST(expect_error(p).find("malformed JSON") != std::string::npos);
    const std::string short_data = R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})";
    write_bytes(p, std::string(1, char(short_data.size())) + std::string(7, '\0') + short_data + std::string(8, '\0'));
    const std::string msg = expect_error(p);
    BOOST_TEST(msg.find("'w'") != std::string::npos, msg);
    BOOST_TEST(msg.find(p.string()) != std::string::npos, msg);
}

BOOST_AUTO_TEST_SUITE_END()
