// train/checkpoint_checksums.hpp: the size and CRC-32C of every tensor file of a checkpoint, written at save and
// verified before a resume reads a tensor. Each kind of damage is refused with a message naming the file.
#include "../support/errors.hpp"

#include <tinylm/train/checkpoint_checksums.hpp>

#include <boost/test/unit_test.hpp>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

namespace fs = std::filesystem;
using tl_test::error_of;

namespace {

struct checkpoint_dir {
    fs::path path = fs::temp_directory_path() / ("tinylm_test_checksums_" + std::to_string(::getpid()));
    checkpoint_dir() {
        fs::remove_all(path);
        fs::create_directories(path);
        write("model.safetensors", std::string(3000, 'm') + "tail");
        write("optimizer.safetensors", "optimizer state");
        write("trainer_state.json", "{}"); // not a tensor file: not listed
    }
    ~checkpoint_dir() { fs::remove_all(path); }
    void write(const std::string& name, const std::string& bytes) const {
        std::ofstream(path / name, std::ios::binary) << bytes;
    }
};

} // namespace

BOOST_AUTO_TEST_SUITE(checkpoint_checksums)

BOOST_AUTO_TEST_CASE(lists_every_tensor_file_with_its_size_and_crc) {
    checkpoint_dir d;
    const nlohmann::json sums = tl::tensor_file_checksums(d.path);
    BOOST_TEST(sums.size() == 2u);
    BOOST_TEST(sums.at("model.safetensors").at("bytes").get<std::uint64_t>() == 3004u);
    BOOST_TEST(sums.at("optimizer.safetensors").at("crc32c").get<std::string>() ==
               tl::crc32c_hex(tl::crc32c("optimizer state")));
    BOOST_TEST(tl::crc32c_hex(0x0000abcdu) == "0000abcd"); // eight digits, leading zeros kept
    BOOST_TEST(tl::file_crc32c(d.path / "model.safetensors") == tl::crc32c(std::string(3000, 'm') + "tail"));
}

BOOST_AUTO_TEST_CASE(intact_files_verify_and_an_old_checkpoint_has_none) {
    checkpoint_dir d;
    const nlohmann::json state = {{"checksums", tl::tensor_file_checksums(d.path)}};
    BOOST_TEST(tl::verify_tensor_file_checksums(d.path, state, "trainer_state.json"));
    BOOST_TEST(!tl::verify_tensor_file_checksums(d.path, nlohmann::json::object(), "trainer_state.json"));
}

BOOST_AUTO_TEST_CASE(damage_is_refused_naming_the_file) {
    checkpoint_dir d;
    const nlohmann::json state = {{"checksums", tl::tensor_file_checksums(d.path)}};
    const auto verify = [&] { tl::verify_tensor_file_checksums(d.path, state, "trainer_state.json"); };

    d.write("model.safetensors", std::string(3000, 'm') + "tAil"); // one flipped byte, same size
    std::string m = error_of(verify);
    BOOST_TEST(m.find("model.safetensors: checksum mismatch; the checkpoint is damaged") != std::string::npos, m);

    d.write("model.safetensors", std::string(3000, 'm')); // truncated
    m = error_of(verify);
    BOOST_TEST(m.find("has 3000 bytes, not 3004") != std::string::npos, m);

    fs::remove(d.path / "model.safetensors");
    m = error_of(verify);
    BOOST_TEST(m.find("model.safetensors is missing") != std::string::npos, m);
}

BOOST_AUTO_TEST_CASE(a_hostile_checksums_entry_is_refused) {
    checkpoint_dir d;
    const auto verify = [&](const nlohmann::json& sums) {
        return error_of([&] { tl::verify_tensor_file_checksums(d.path, {{"checksums", sums}}, "trainer_state.json"); });
    };
    BOOST_TEST(verify(3).find("trainer_state.json: checksums must be an object") != std::string::npos);
    const std::string outside = verify({{"../model.safetensors", {{"bytes", 1}, {"crc32c", "00000000"}}}});
    BOOST_TEST(outside.find("names a file outside the checkpoint") != std::string::npos, outside);
    const std::string wrong_type = verify({{"model.safetensors", {{"bytes", "many"}, {"crc32c", "00000000"}}}});
    BOOST_TEST(wrong_type.find("checksums.model.safetensors") != std::string::npos, wrong_type);
    BOOST_TEST(wrong_type.find("bytes") != std::string::npos, wrong_type);
}

BOOST_AUTO_TEST_SUITE_END()
