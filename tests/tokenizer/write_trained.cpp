// write_trained OUT_DIR: trains both tokenizer styles (on the Russian and Tatar data when the data directory has
// them, else on the committed test texts), writes OUT_DIR/{byte_level,byte_fallback}.json and the ids tinylm
// gives for tests/reference/tokenizer/texts.json (…_ids.json). The "torch" ctest then has Hugging Face load the
// files (make_reference.py --check) and compare ids.
#include <tinylm/tokenizer/bpe_trainer.hpp>
#include <tinylm/tokenizer/hf_json.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

namespace {
std::string read(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}
} // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::cerr << "usage: write_trained OUT_DIR\n";
        return 2;
    }
    try {
        const std::string out = argv[1];
        std::filesystem::create_directories(out);
        const char* env = std::getenv("TINYLM_DATA_DIR");
        const std::filesystem::path data = env ? env : TINYLM_SOURCE_DIR "/../shared/data";
        const auto texts = nlohmann::json::parse(read(TINYLM_SOURCE_DIR "/tests/reference/tokenizer/texts.json"));
        std::string corpus;
        for (const auto& t : texts)
            corpus += t["text"].get<std::string>() + "\n";
        for (const auto& rel : {"russian_novels/corpus/Bulgakov_Master.txt", "tatar/apertium_story.txt"})
            if (std::filesystem::exists(data / rel)) corpus += read(data / rel);
        for (auto style : {tl::bpe_style::byte_level, tl::bpe_style::byte_fallback}) {
            tl::bpe_trainer_options opt;
            opt.style = style;
            opt.vocab_size = 4000;
            opt.n_threads = 2;
            tl::bpe_trainer trainer(opt);
            trainer.feed(corpus);
            const tl::tokenizer tok = trainer.train();
            const std::string name = style == tl::bpe_style::byte_level ? "byte_level" : "byte_fallback";
            tl::save_tokenizer_json(tok, out + "/" + name + ".json");
            nlohmann::json ids;
            for (const auto& t : texts)
                ids[t["name"].get<std::string>()] = tok.encode(t["text"].get<std::string>());
            std::ofstream(out + "/" + name + "_ids.json") << ids.dump();
            std::cout << "wrote " << out << "/" << name << ".json (" << tok.vocab_size() << " tokens, " << corpus.size()
                      << " bytes of text)\n";
        }
    } catch (const std::exception& e) {
        std::cerr << e.what() << "\n";
        return 1;
    }
    return 0;
}
