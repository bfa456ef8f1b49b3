// bench_checkpoint_crc: how long the checksum of a checkpoint file takes (train/checkpoint_checksums.hpp), the
// cost a save and a resume pay per tensor file. Reads the file as a resume does (1 MiB pieces) and prints MB/s.
//
//   head -c 600000000 /dev/urandom > /tmp/crc600.bin && build/benchmarks/checkpoint_crc/bench_checkpoint_crc
//   /tmp/crc600.bin
#include <tinylm/train/checkpoint_checksums.hpp>

#include <chrono>
#include <cstdio>

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: bench_checkpoint_crc FILE\n");
        return 2;
    }
    try {
        const auto t0 = std::chrono::steady_clock::now();
        const std::uint32_t crc = tl::file_crc32c(argv[1]);
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        const double mb = double(std::filesystem::file_size(argv[1])) / 1e6;
        std::printf("%s: crc32c %08x, %.0f MB in %.2f s = %.0f MB/s\n", argv[1], crc, mb, s, mb / s);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}
