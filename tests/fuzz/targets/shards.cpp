// A token shard: the header is validated against the file size before any token is read; a valid shard is read
// whole and through the batch loader.
#include "../fuzz_target.hpp"

#include <tinylm/data/shards.hpp>

#include <vector>

TINYLM_FUZZ_TARGET(shards) {
    const auto path = tl_fuzz::scratch::get().write("train.bin", in);
    const tl::data::token_shard shard(path);
    std::vector<std::uint32_t> tokens(shard.size());
    shard.copy<std::uint32_t>(0, tokens);
    if (shard.size() >= 5) {
        tl::data::batch_loader loader(shard, 2, 4, 1);
        std::vector<std::int32_t> batch(2 * 5);
        loader.next<std::int32_t>(batch);
    }
}
