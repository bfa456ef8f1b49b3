// wordpiece_check REFERENCE_JSON TOKENIZER_JSON: the live parity check of the torch-labelled ctest (a reference
// made at test time by make_wordpiece_reference.py); exit 1 on any difference.
#include "wordpiece_parity.hpp"

#include <tinylm/tokenizer/wordpiece_json.hpp>

#include <fstream>
#include <iostream>

int main(int argc, char** argv) {
    if (argc != 3) {
        std::cerr << "usage: wordpiece_check REFERENCE_JSON TOKENIZER_JSON\n";
        return 2;
    }
    try {
        std::ifstream in(argv[1]);
        const auto ref = nlohmann::json::parse(in);
        const auto tok = tl::load_wordpiece_json(argv[2]);
        const auto n = tl::test::compare_wordpiece(tok, ref, std::cout);
        std::cout << argv[1] << ": " << ref["texts"].size() << " texts, " << n.checked << " checks, " << n.failed
                  << " differ from tokenizers " << ref["tokenizers_version"].get<std::string>() << "\n";
        return n.failed == 0 && n.checked > 0 ? 0 : 1;
    } catch (const std::exception& e) {
        std::cerr << "wordpiece_check: " << e.what() << "\n";
        return 1;
    }
}
