// Evaluation task files: multiple-choice JSONL and the paraphrase QA set.
#include "../fuzz_target.hpp"

#include <tinylm/eval/multiple_choice.hpp>
#include <tinylm/eval/paraphrase_qa.hpp>

TINYLM_FUZZ_TARGET(tasks) {
    auto& scratch = tl_fuzz::scratch::get();
    const auto mc = scratch.write("task.jsonl", in), qa = scratch.write("qa.jsonl", in);
    // Both readers; the one the content looks like decides acceptance.
    const bool looks_mc = tl_fuzz::text(in).find("\"choices\"") != std::string_view::npos;
    const auto read_mc = [&] { (void)tl::eval::load_mc_jsonl(mc); };
    const auto read_qa = [&] { (void)tl::eval::qa_problems(tl::eval::load_qa(qa)); };
    if (looks_mc) {
        tl_fuzz::attempt(read_qa);
        read_mc();
    } else {
        tl_fuzz::attempt(read_mc);
        read_qa();
    }
}
