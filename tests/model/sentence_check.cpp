// sentence_check: writes what tests/reference/encoder/minilm_reference.py check compares with sentence-transformers
// and peft (the torch-labelled test sentence_transformers_load_tinylm):
//   texts.txt                   200 varied texts (the fixture's 24, then lines of the data dir when present)
//   base.safetensors            tinylm's embeddings with the model as loaded
//   full_model/, full.safetensors           after 2 full fine-tuning steps: the folder tinylm saved, its embeddings
//   lora_adapter/, lora.safetensors         after 3 LoRA steps: the PEFT adapter, the embeddings with the adapter
//   lora_model/, lora_merged.safetensors    the adapter merged and saved as a sentence-transformers folder
//   usage: sentence_check MODEL_DIR WORK_DIR [DATA_DIR]
#include <tinylm/embed/cached_ranking.hpp>
#include <tinylm/io/peft.hpp>
#include <tinylm/io/sentence_transformers.hpp>
#include <tinylm/optim/adamw.hpp>

#include <cstdio>
#include <fstream>

namespace fs = std::filesystem;
using namespace tl;

namespace {
struct lora4 { // every projection BERT has; B trained away from zero so the adapter matters
    static constexpr lora_config value{.rank = 4, .alpha = 8, .targets = lora_attention | lora_up | lora_down};
};

void save_embeddings(const std::vector<float>& e, index_t n, const fs::path& file) {
    safetensors_writer w;
    w.add<float>("embeddings", cview<float>{e.data(), {n, index_t(e.size()) / n}});
    w.save(file);
}

std::vector<std::string> read_texts(const fs::path& data_dir) {
    std::vector<std::string> texts;
    std::ifstream in(fs::path(TINYLM_SOURCE_DIR) / "tests/reference/fixtures/minilm_embeddings.txt");
    for (std::string line; std::getline(in, line);) {
        std::string t;
        for (std::size_t i = 0; i < line.size(); ++i)
            if (line[i] == '\\' && i + 1 < line.size() && line[i + 1] == 'n')
                t.push_back('\n'), ++i;
            else
                t.push_back(line[i]);
        texts.push_back(t);
    }
    for (const char* f : {"tatar/ntrex128.eng.txt", "tatar/ntrex128.rus.txt", "tatar/ntrex128.tat.txt"}) {
        std::ifstream lines(data_dir / f);
        int taken = 0;
        for (std::string line; taken < 59 && std::getline(lines, line);)
            if (!line.empty()) texts.push_back(line), ++taken;
    }
    if (texts.size() > 200) texts.resize(200);
    return texts;
}

template <class Model>
void train(Model& m, embed::sentence_encoder<Model>& se, const std::vector<std::string>& texts, int steps, double lr) {
    adamw opt(m, {.lr = lr, .weight_decay = 0.0});
    embed::ranking_step<default_backend> step;
    for (int k = 0; k < steps; ++k) {
        std::vector<std::string> a, p;
        for (int i = 0; i < 8; ++i)
            a.push_back(texts[std::size_t(8 * k + i)]), p.push_back(texts[std::size_t(8 * k + i + 1)]);
        m.zero_grad();
        const double loss = step.run(se, {a, p}, {.mini_batch_size = 4});
        opt.step();
        std::printf("  step %d: loss %.4f\n", k + 1, loss);
    }
}
} // namespace

int main(int argc, char** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: sentence_check MODEL_DIR WORK_DIR [DATA_DIR]\n");
        return 2;
    }
    try {
        const fs::path model_dir = argv[1], work = argv[2];
        const fs::path data_dir = argc > 3 ? fs::path(argv[3]) : fs::path(TINYLM_SOURCE_DIR "/../shared/data");
        fs::create_directories(work);
        const std::vector<std::string> texts = read_texts(data_dir);
        {
            std::ofstream out(work / "texts.txt");
            for (const std::string& t : texts) {
                for (char c : t)
                    if (c == '\n')
                        out << "\\n";
                    else
                        out.put(c);
                out.put('\n');
            }
        }
        const index_t n = index_t(texts.size());
        const sentence_folder folder = read_sentence_config(model_dir);
        const wordpiece_tokenizer tok = load_wordpiece_json((model_dir / "tokenizer.json").string());
        {
            auto m = load_bert(folder.transformer_dir);
            embed::sentence_encoder se(*m, sentence_tokenizer(tok), folder.config);
            save_embeddings(se.encode(texts, 16), n, work / "base.safetensors");
            train(*m, se, texts, 2, 1e-4);
            write_sentence_folder(*m, work / "full_model", folder.config, model_dir);
            save_embeddings(se.encode(texts, 16), n, work / "full.safetensors");
        }
        {
            auto m = load_bert<default_backend, lora4>(folder.transformer_dir, 7);
            embed::sentence_encoder se(*m, sentence_tokenizer(tok), folder.config);
            train(*m, se, texts, 3, 1e-2);
            save_adapter(*m, work / "lora_adapter", model_dir.string());
            save_embeddings(se.encode(texts, 16), n, work / "lora.safetensors");
            m->merge();
            write_sentence_folder(*m, work / "lora_model", folder.config, model_dir);
            save_embeddings(se.encode(texts, 16), n, work / "lora_merged.safetensors");
        }
        std::printf("sentence_check: %lld texts, files in %s\n", static_cast<long long>(n), work.c_str());
    } catch (const tl::error& e) {
        std::fprintf(stderr, "sentence_check: %s\n", e.what());
        return 1;
    }
    return 0;
}
