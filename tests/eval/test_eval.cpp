// Evaluation (include/tinylm/eval/): bits per byte on a model whose logits are known and against per-token
// losses from the logits, lm-eval's continuation encoding, the multiple-choice runner against a direct
// per-token computation, Python's random.sample, the Tatar QA data file and its floors.
#include "../support/data.hpp"

#include <tinylm/backend/decoding_weights.hpp>
#include <tinylm/eval/bits_per_byte.hpp>
#include <tinylm/eval/multiple_choice.hpp>
#include <tinylm/eval/paraphrase_qa.hpp>
#include <tinylm/io/hf_checkpoint.hpp>
#include <tinylm/model/decoder.hpp>
#include <tinylm/model/presets.hpp>
#include <tinylm/tokenizer/bpe_trainer.hpp>
#include <tinylm/tokenizer/hf_json.hpp>

#include <boost/test/unit_test.hpp>

#include <utf8proc.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <numbers>

using namespace tl;
using namespace tl::eval;
namespace fs = std::filesystem;

namespace {

// Small, with weights large enough that choices get clearly different scores.
struct eval_config {
    static constexpr model_config value{.vocab_size = 400,
                                        .d_model = 48,
                                        .n_layers = 2,
                                        .n_heads = 4,
                                        .n_kv_heads = 2,
                                        .d_ff = 96,
                                        .max_seq_len = 48,
                                        .init_std = 0.25};
};
using eval_model = decoder<eval_config>;

// Byte vocabulary, for the uniform-model case.
struct bytes_config {
    static constexpr model_config value{
        .vocab_size = 256, .d_model = 16, .n_layers = 1, .n_heads = 2, .n_kv_heads = 1, .d_ff = 32, .max_seq_len = 16};
};

const char* training_text =
    "Question: What colour is the sky?\nAnswer: blue\n\nQuestion: What do cows drink?\nAnswer: water\n\n"
    "The sky is blue and the grass is green. Cows eat grass and drink water. Birds fly over the river.\n"
    "Алма — җимеш. Чыпчык — кош. Каен — агач. Тимер — металл. Кояш — йолдыз. Бәрәңге — яшелчә.\n"
    "Гайсә Бәйтлехем шәһәрендә туды. Яхъя Үрдүн елгасында чумдырды. Петер һәм Әндри балыкчылар иде.\n";

const tokenizer& test_tokenizer() {
    static const tokenizer tok = [] {
        bpe_trainer_options o;
        o.vocab_size = 360;
        o.special_tokens = {"<bos>", "<eos>", "<pad>"};
        o.n_threads = 1;
        bpe_trainer t(o);
        for (int i = 0; i < 4; ++i)
            t.feed(training_text);
        return t.train();
    }();
    return tok;
}

// log p(tokens[k] | tokens[begin..k)) straight from the model's logits, in double.
double direct_logprob(eval_model& m, const std::vector<token_t>& tokens, std::size_t begin, std::size_t k) {
    const index_t T = index_t(k - begin), V = m.config().vocab_size;
    std::vector<float> logits(std::size_t(T * V));
    m.logits(cview<token_t>{tokens.data() + begin, {1, T}}, tensor_view<float>{logits.data(), {1, T, V}});
    const float* row = logits.data() + std::size_t((T - 1) * V);
    double mx = row[0], s = 0;
    for (index_t v = 0; v < V; ++v)
        mx = std::max(mx, double(row[v]));
    for (index_t v = 0; v < V; ++v)
        s += std::exp(double(row[v]) - mx);
    return double(row[tokens[k]]) - mx - std::log(s);
}

// Sum of log p over a request's continuation, from the logits of the window lm-eval would feed the model:
// (context + continuation)[-(max_len + 1):][:-1].
template <class Model>
double direct_continuation(Model& m, const token_request& r) {
    std::vector<token_t> whole(r.context);
    whole.insert(whole.end(), r.continuation.begin(), r.continuation.end());
    const std::size_t max_len = std::size_t(m.config().max_seq_len);
    const std::size_t begin = whole.size() > max_len + 1 ? whole.size() - max_len - 1 : 0;
    double s = 0;
    for (std::size_t k = r.context.size(); k < whole.size(); ++k)
        s += direct_logprob(m, whole, begin, k);
    return s;
}

std::vector<token_t> ids_of(const tokenizer& tok, const std::string& s) {
    const auto v = tok.encode(s);
    return {v.begin(), v.end()};
}

std::vector<mc_doc> toy_docs() {
    return {{"What colour is the sky?", {"blue", "green", "red"}, 0},
            {"What do cows drink?", {"water", "milk", "river"}, 0},
            {"Алма нәрсә ул?", {"җимеш", "кош", "агач", "металл"}, 0},
            {"Where was Гайсә born?", {"Бәйтлехем", "the river", "sky"}, 0},
            {"What flies over the river?", {"birds", "cows"}, 0}};
}

std::string casefold(std::string_view s) {
    utf8proc_uint8_t* out = nullptr;
    const auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()), utf8proc_ssize_t(s.size()), &out,
                                utf8proc_option_t(UTF8PROC_CASEFOLD | UTF8PROC_COMPOSE));
    std::string r = n >= 0 ? std::string(reinterpret_cast<char*>(out), std::size_t(n)) : std::string(s);
    std::free(out);
    return r;
}

} // namespace

BOOST_AUTO_TEST_SUITE(eval)

// ---- bits per byte ---------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(bpb_of_a_uniform_model_is_log2_vocab) {
    // All weights zero: every logit is 0, p = 1/256 for each byte, so exactly 8 bits per byte; with windows
    // shorter than the documents too.
    decoder<bytes_config> m(1);
    for (const parameter_entry& e : m.parameter_entries())
        e.value.fill(0.0f);
    const std::vector<std::string> docs = {"hello world, this is longer than one window", "ok", "Сәлам!"};
    std::vector<std::vector<token_t>> tokens;
    std::size_t bytes = 0;
    for (const std::string& d : docs) {
        tokens.emplace_back(d.begin(), d.end());
        for (token_t& t : tokens.back())
            t = token_t(static_cast<unsigned char>(t));
        bytes += d.size();
    }
    for (index_t stride : {16, 5, 1}) {
        const bpb_report r = evaluate_bpb_tokens(m, std::span<const std::vector<token_t>>(tokens), bytes,
                                                 {.stride = stride, .batch = 3, .prefix_token = 0});
        BOOST_TEST(r.tokens == bytes);
        BOOST_TEST(r.bits_per_byte() == 8.0, boost::test_tools::tolerance(1e-6));
        BOOST_TEST(r.perplexity() == 256.0, boost::test_tools::tolerance(1e-5));
    }
    // Without a prefix token each document's first byte is not scored but its byte still counts.
    const bpb_report r = evaluate_bpb_tokens(m, std::span<const std::vector<token_t>>(tokens), bytes, {});
    BOOST_TEST(r.unscored_tokens == 3u);
    BOOST_TEST(r.tokens == bytes - 3);
    BOOST_TEST(r.bits_per_byte() == 8.0 * double(bytes - 3) / double(bytes), boost::test_tools::tolerance(1e-6));
}

BOOST_AUTO_TEST_CASE(bpb_windows_equal_per_token_losses) {
    // stride 1: every token beyond the first window is predicted from exactly the `context` tokens before it.
    eval_model m(7);
    const tokenizer& tok = test_tokenizer();
    const std::vector<std::string> docs = {
        "The sky is blue and the grass is green. Cows eat grass and drink water. Birds fly over the river. "
        "Алма — җимеш. Чыпчык — кош. Каен — агач.",
        "Cows drink water."};
    const token_t bos = tok.token_to_id("<bos>");
    const index_t context = 12;
    double expected = 0;
    std::size_t tokens = 0;
    for (const std::string& d : docs) {
        std::vector<token_t> s{bos};
        for (token_t t : ids_of(tok, d))
            s.push_back(t);
        for (std::size_t k = 1; k < s.size(); ++k)
            expected -= direct_logprob(m, s, k > std::size_t(context) ? k - std::size_t(context) : 0, k);
        tokens += s.size() - 1;
    }
    BOOST_TEST_REQUIRE(ids_of(tok, docs[0]).size() > std::size_t(context) + 5); // several windows
    const bpb_report r = evaluate_bpb(m, tok, std::span<const std::string>(docs),
                                      {.context = context, .stride = 1, .prefix_token = bos});
    BOOST_TEST(r.tokens == tokens);
    BOOST_TEST(r.bytes == docs[0].size() + docs[1].size());
    BOOST_TEST(r.nll == expected, boost::test_tools::tolerance(1e-4));
    BOOST_TEST(r.bits_per_byte() == r.nll / (std::numbers::ln2 * double(r.bytes)), boost::test_tools::tolerance(1e-9));
    // Disjoint windows: the same tokens, fewer forwards.
    const bpb_report d =
        evaluate_bpb(m, tok, std::span<const std::string>(docs), {.context = context, .prefix_token = bos});
    BOOST_TEST(d.tokens == tokens);
    BOOST_TEST(d.windows < r.windows);
}

// By decoding steps (forward_cached, a token a step) the f32 model scores what eval_loss scores; with decoding copies
// of the weights live, or a bf16 KV cache, the steps read those and the numbers move, by about what the format
// rounds away (here: q8_0 1e-5 of the nll, q4_0 2.3%, a bf16 cache 5e-5).
BOOST_AUTO_TEST_CASE(bpb_by_decoding_steps_reads_what_decoding_reads) {
    eval_model m(7);
    const tokenizer& tok = test_tokenizer();
    const std::vector<std::string> docs = {
        "The sky is blue and the grass is green. Cows eat grass and drink water. Birds fly over the river. "
        "Алма — җимеш. Чыпчык — кош. Каен — агач.",
        "Cows drink water.", "Birds fly."};
    const token_t bos = tok.token_to_id("<bos>");
    const bpb_options windows{.context = 12, .stride = 5, .batch = 3, .prefix_token = bos};
    bpb_options steps = windows;
    steps.by_steps = true;
    auto bpb = [&](const bpb_options& o) { return evaluate_bpb(m, tok, std::span<const std::string>(docs), o); };
    const bpb_report whole = bpb(windows), f32 = bpb(steps);
    for (bpb_options o : {windows, steps}) { // progress: after each batch, up to every scored token
        std::vector<std::size_t> said;
        o.progress = [&](std::size_t done, std::size_t total) {
            BOOST_TEST(total == whole.tokens);
            said.push_back(done);
        };
        bpb(o);
        BOOST_TEST(said.size() == (whole.windows + 2) / 3); // batches of 3
        BOOST_TEST(std::is_sorted(said.begin(), said.end()));
        BOOST_TEST((!said.empty() && said.front() > 0 && said.back() == whole.tokens));
    }
    BOOST_TEST_REQUIRE(whole.windows > 4u); // several batches, windows of several lengths
    BOOST_TEST(f32.tokens == whole.tokens);
    BOOST_TEST(f32.nll == whole.nll, boost::test_tools::tolerance(1e-5));
    steps.batch = 1;
    BOOST_TEST(bpb(steps).nll == whole.nll, boost::test_tools::tolerance(1e-5));
    steps.batch = 3;
    double moved[2] = {};
    for (const decoding_format format : {decoding_format::q8_0, decoding_format::q4_0}) {
        const decoding_weights copies(m.parameter_entries(), format);
        const bpb_report q = bpb(steps);
        const double change = std::abs(q.nll - f32.nll) / f32.nll;
        BOOST_TEST(change > 0.0, to_string(format));
        BOOST_TEST(change < (format == decoding_format::q8_0 ? 0.001 : 0.05), to_string(format) << " " << change);
        moved[format == decoding_format::q4_0] = change;
        BOOST_TEST_MESSAGE("bpb by steps, " << to_string(format) << ": nll " << q.nll << " against " << f32.nll);
    }
    BOOST_TEST(moved[0] < moved[1]);
    m.set_kv_precision(kv_precision::bf16);
    const bpb_report kv = bpb(steps);
    BOOST_TEST(kv.nll != f32.nll);
    BOOST_TEST_MESSAGE("bpb by steps, bf16 KV cache: nll " << kv.nll << " against " << f32.nll);
    BOOST_TEST(kv.nll == f32.nll, boost::test_tools::tolerance(0.001));
    BOOST_CHECK_THROW(bpb({.batch = 0}), std::runtime_error);
}

BOOST_AUTO_TEST_CASE(document_windows_score_each_token_once) {
    std::vector<token_t> doc(23);
    for (std::size_t i = 0; i < doc.size(); ++i)
        doc[i] = token_t(i + 1);
    for (index_t stride : {1, 3, 8}) {
        std::map<token_t, int> seen;
        for (const bpb_window& w : document_windows(doc, 8, stride, 0)) {
            BOOST_TEST(w.ids.size() <= 8u);
            BOOST_TEST(w.ids.size() == w.targets.size());
            for (std::size_t i = 0; i < w.targets.size(); ++i)
                if (w.targets[i] != -100) {
                    ++seen[w.targets[i]];
                    // enough context: all of it, or context - stride tokens at least
                    BOOST_TEST((i + 1 >= std::size_t(8 - stride) || w.ids.front() == 0));
                }
        }
        BOOST_TEST(seen.size() == doc.size());
        for (const auto& [t, n] : seen)
            BOOST_TEST(n == 1);
    }
}

// ---- lm-eval's continuation encoding and scoring -------------------------------------------------------

BOOST_AUTO_TEST_CASE(encode_pair_moves_trailing_space_and_splits_the_whole) {
    const tokenizer& tok = test_tokenizer();
    const token_request a = encode_pair(tok, "Question: What colour is the sky?\nAnswer: ", "blue");
    const token_request b = encode_pair(tok, "Question: What colour is the sky?\nAnswer:", " blue");
    BOOST_TEST(a.context == b.context);
    BOOST_TEST(a.continuation == b.continuation);
    BOOST_TEST(a.continuation == ids_of(tok, " blue"));
    // The continuation is whole[len(context):], not encode(continuation), when a merge crosses the boundary.
    const token_request c = encode_pair(tok, "Ca", "ws drink");
    const std::vector<token_t> whole = ids_of(tok, "Caws drink"), ctx = ids_of(tok, "Ca");
    BOOST_TEST(c.context == ctx);
    BOOST_TEST(c.continuation == std::vector<token_t>(whole.begin() + std::ptrdiff_t(ctx.size()), whole.end()));
    // An empty context stands on the prefix token.
    const token_request e = encode_pair(tok, "", "Cows", {.prefix_token = tok.token_to_id("<bos>")});
    BOOST_TEST(e.context == std::vector<token_t>{tok.token_to_id("<bos>")});
    BOOST_CHECK_THROW(encode_pair(tok, "", "Cows"), tl::error);
}

BOOST_AUTO_TEST_CASE(loglikelihoods_equal_direct_per_token_sums) {
    eval_model m(3);
    const tokenizer& tok = test_tokenizer();
    std::string long_context;
    for (int i = 0; i < 10; ++i)
        long_context += "The sky is blue and the grass is green. ";
    const std::vector<text_request> reqs = {{"Question: What colour is the sky?\nAnswer:", " blue"},
                                            {"Алма нәрсә ул? Алма —", " җимеш"},
                                            {"Cows", " drink water"},
                                            {long_context + "Cows drink", " water"}}; // longer than the context
    const std::vector<ll_result> got = loglikelihoods(m, tok, std::span<const text_request>(reqs), {.batch = 3});
    for (std::size_t i = 0; i < reqs.size(); ++i) {
        const token_request r = encode_pair(tok, reqs[i].context, reqs[i].continuation);
        const double expected = direct_continuation(m, r);
        BOOST_TEST(got[i].token_logprobs.size() == r.continuation.size());
        BOOST_TEST(got[i].logprob == expected, boost::test_tools::tolerance(1e-5));
    }
    BOOST_TEST(encode_pair(tok, reqs[3].context, reqs[3].continuation).context.size() > 48u);
}

// ---- multiple choice --------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(python_random_matches_cpython) {
    // Values printed by CPython 3.11.7 (/work/venv/bin/python):
    //   r = random.Random(1234); r.sample(range(10), 3); r.sample(range(100), 4)   (a pool, then a set)
    //   random.Random(0).getrandbits(32); random.Random(2**40 + 5).sample(range(7), 7)
    //   r = random.Random(1234); r.sample(range(50), 8); r.getrandbits(40)
    python_random r(1234);
    BOOST_TEST(r.sample_indices(10, 3) == (std::vector<std::size_t>{7, 1, 0}));
    BOOST_TEST(r.sample_indices(100, 4) == (std::vector<std::size_t>{11, 74, 4, 85}));
    BOOST_TEST(python_random(0).getrandbits(32) == 3626764237u);
    BOOST_TEST(python_random((1ull << 40) + 5).sample_indices(7, 7) == (std::vector<std::size_t>{4, 6, 2, 0, 5, 3, 1}));
    python_random q(1234);
    BOOST_TEST(q.sample_indices(50, 8) == (std::vector<std::size_t>{49, 28, 7, 0, 5, 37, 2, 42}));
    BOOST_TEST(q.getrandbits(40) == 93171101020ull);
}

BOOST_AUTO_TEST_CASE(fewshot_contexts_follow_lm_eval_layout) {
    const std::vector<mc_doc> test = toy_docs(), dev = toy_docs();
    mc_options o{.num_fewshot = 2, .sampler = fewshot_sampler::first_n, .shots_from_test = true};
    const std::vector<std::string> ctx = mc_contexts(test, dev, o);
    BOOST_TEST(ctx[0] == "Question: What do cows drink?\nAnswer: water\n\nQuestion: Алма нәрсә ул?\nAnswer: җимеш\n\n"
                         "Question: What colour is the sky?\nAnswer:");
    BOOST_TEST(ctx[2] == "Question: What colour is the sky?\nAnswer: blue\n\nQuestion: What do cows drink?\nAnswer: "
                         "water\n\nQuestion: Алма нәрсә ул?\nAnswer:");
    // Random shots: never the document itself, k of them, and reproducible from the seed.
    o.sampler = fewshot_sampler::random;
    const std::vector<std::string> r1 = mc_contexts(test, dev, o), r2 = mc_contexts(test, dev, o);
    BOOST_TEST(r1 == r2);
    for (std::size_t i = 0; i < test.size(); ++i) {
        const std::string own = "Question: " + test[i].question + "\nAnswer:";
        BOOST_TEST(r1[i].find(own) == r1[i].size() - own.size()); // only at the end
        std::size_t shots = 0;
        for (std::size_t p = 0; (p = r1[i].find("\n\n", p)) != std::string::npos; p += 2)
            ++shots;
        BOOST_TEST(shots == 2u);
    }
}

BOOST_AUTO_TEST_CASE(mc_scores_and_metrics_from_direct_computation) {
    eval_model m(11);
    const tokenizer& tok = test_tokenizer();
    const std::vector<mc_doc> docs = toy_docs();
    for (int shots : {0, 1}) {
        const mc_options o{.num_fewshot = shots, .shots_from_test = true};
        const mc_report rep = evaluate_mc(m, tok, docs, docs, o);
        const std::vector<std::string> ctx = mc_contexts(docs, docs, o);
        double acc = 0, acc_norm = 0;
        for (std::size_t d = 0; d < docs.size(); ++d) {
            BOOST_TEST(rep.docs[d].context == ctx[d]);
            std::vector<double> lls;
            for (const std::string& c : docs[d].choices) {
                const double s = direct_continuation(m, encode_pair(tok, ctx[d], " " + c));
                lls.push_back(s);
            }
            for (std::size_t c = 0; c < lls.size(); ++c)
                BOOST_TEST(rep.docs[d].logprobs[c] == lls[c], boost::test_tools::tolerance(1e-5));
            const auto best = std::size_t(std::max_element(lls.begin(), lls.end()) - lls.begin());
            std::size_t best_norm = 0;
            for (std::size_t c = 1; c < lls.size(); ++c)
                if (lls[c] / double(code_points(docs[d].choices[c])) >
                    lls[best_norm] / double(code_points(docs[d].choices[best_norm])))
                    best_norm = c;
            BOOST_TEST(rep.docs[d].pred == int(best));
            BOOST_TEST(rep.docs[d].pred_norm == int(best_norm));
            acc += best == std::size_t(docs[d].answer);
            acc_norm += best_norm == std::size_t(docs[d].answer);
        }
        BOOST_TEST(rep.acc == acc / double(docs.size()), boost::test_tools::tolerance(1e-12));
        BOOST_TEST(rep.acc_norm == acc_norm / double(docs.size()), boost::test_tools::tolerance(1e-12));
    }
}

BOOST_AUTO_TEST_CASE(mc_jsonl_errors_name_the_line) {
    const fs::path p = fs::temp_directory_path() / "tinylm_eval_bad.jsonl";
    std::ofstream(p) << "{\"question\": \"q\", \"choices\": [\"a\", \"b\"], \"answer\": 1}\n"
                     << "{\"question\": \"q\", \"choices\": [\"a\", \"b\"], \"answer\": 2}\n";
    try {
        load_mc_jsonl(p);
        BOOST_FAIL("no error");
    } catch (const tl::error& e) {
        BOOST_TEST(std::string(e.what()).find(":2: answer 2") != std::string::npos, e.what());
    }
    fs::remove(p);
}

// ---- the Tatar paraphrase QA benchmark -------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(qa_report_counts_by_hand) {
    qa_set set;
    set.facts.push_back({"a", "x:1", "yes", {"p1", "p2", "p3"}, {"n1", "n2", "n3"}});
    set.facts.push_back({"b", "x:2", "yes", {"q1", "q2", "q3"}, {"m1", "m2", "m3"}});
    // fact a: right every time; fact b: right twice, then the third choice; sum scoring.
    const std::vector<double> lls = {0, -5, -5, -5, 0, -5, -5, -5, 0,  -5, -5, -5,
                                     0, -5, -5, -5, 0, -5, -5, -5, -9, -5, -1, -5};
    const qa_report r = qa_report_from(set, {.score = qa_score::sum}, lls);
    BOOST_TEST(r.questions == 6u);
    BOOST_TEST(r.correct == 5u);
    BOOST_TEST(r.consistent_facts == 1u);
    BOOST_TEST(r.consistent_correct_facts == 1u);
    BOOST_TEST(r.results[5].chosen == 2);
    BOOST_TEST(r.chance == 0.25, boost::test_tools::tolerance(1e-12));
    // Equal scores: the pick follows a per-question order, not "the answer first".
    const qa_report ties = qa_report_from(set, {.score = qa_score::sum}, std::vector<double>(24, -1.0));
    std::set<int> picked;
    for (const qa_question_result& q : ties.results)
        picked.insert(q.chosen);
    BOOST_TEST(picked.size() > 1u);
}

BOOST_AUTO_TEST_CASE(qa_mutual_info_and_groups_by_hand) {
    qa_set set;
    set.facts.push_back({"num_a", "x:1", "yes", {"p1", "p2", "p3"}, {"n1", "n2", "n3"}});
    set.facts.push_back({"kind_b", "x:2", "yes", {"q1", "q2", "q3"}, {"m1", "m2", "m3"}});
    const qa_options mi{.score = qa_score::mutual_info};
    const std::vector<text_request> reqs = qa_requests(set, mi);
    BOOST_TEST_REQUIRE(reqs.size() == 24u + 8u); // then one empty-context request per fact and choice
    BOOST_TEST(reqs[24].context.empty());
    BOOST_TEST(reqs[24].continuation == " yes");
    BOOST_TEST(reqs[31].continuation == " m3");
    // The answer is the likeliest choice after every question; in fact b it is as likely without the question,
    // while choice 2 gains most from the question: mutual information picks choice 2 there.
    std::vector<double> lls;
    for (int p = 0; p < 3; ++p)
        lls.insert(lls.end(), {-1, -3, -3, -3});
    for (int p = 0; p < 3; ++p)
        lls.insert(lls.end(), {-1, -3, -2, -3});
    lls.insert(lls.end(), {-4, -4, -4, -4, -1, -4, -4, -4});
    const qa_report r = qa_report_from(set, mi, lls);
    BOOST_TEST(r.correct == 3u);
    BOOST_TEST(r.results[3].chosen == 2);
    BOOST_TEST(r.consistent_facts == 2u);
    BOOST_TEST(r.consistent_correct_facts == 1u);
    BOOST_TEST_REQUIRE(r.groups.size() == 2u);
    BOOST_TEST(r.groups[0].name == "num");
    BOOST_TEST(r.groups[0].correct == 3u);
    BOOST_TEST(r.groups[1].name == "kind");
    BOOST_TEST(r.groups[1].questions == 3u);
    BOOST_TEST(r.groups[1].correct == 0u);
    BOOST_TEST(r.group_summary() == "num 3/3, kind 0/3");
    // The same likelihoods scored by their sums (the unconditional ones are not requested then).
    const std::vector<double> conditional(lls.begin(), lls.begin() + 24);
    BOOST_TEST(qa_report_from(set, {.score = qa_score::sum}, conditional).correct == 6u);
    BOOST_CHECK_THROW(qa_report_from(set, mi, conditional), tl::error);
}

void check_tatar_qa_file(const fs::path& file) {
    const qa_set set = load_qa(file);
    const std::vector<std::string> problems = qa_problems(set);
    for (const std::string& p : problems)
        BOOST_ERROR(p);
    BOOST_TEST(set.facts.size() >= 60u);
    BOOST_TEST(set.question_count() >= 180u);
}

// Each fact's answer is written on at least one of its source lines of the Tatar corpus (data dir, tatar/).
void check_tatar_qa_sources(const fs::path& file, const fs::path& data) {
    const qa_set set = load_qa(file);
    std::map<std::string, std::vector<std::string>> files;
    std::string corpus; // the running text, case-folded, for the `stated` counts
    for (const char* f : {"song_lyrics.txt", "explanatory_dictionary.txt", "bible_nt.txt", "ntrex128.tat.txt",
                          "udhr.txt", "wikipedia_lines.txt"}) {
        std::ifstream in(data / f);
        corpus += casefold(std::string(std::istreambuf_iterator<char>(in), {}));
    }
    for (const qa_fact& f : set.facts) {
        if (!f.stated.empty()) {
            const std::string stated = casefold(f.stated);
            BOOST_TEST(stated.find(casefold(f.answer)) != std::string::npos, f.id + ": the answer is not in `stated`");
            std::size_t count = 0;
            for (std::size_t at = corpus.find(stated); at != std::string::npos; at = corpus.find(stated, at + 1))
                ++count;
            BOOST_TEST(count >= 5u,
                       f.id + ": \"" + f.stated + "\" is in the corpus " + std::to_string(count) + " times");
        }
        bool found = false;
        std::string_view rest = f.source;
        while (!rest.empty()) {
            const std::size_t comma = rest.find(", ");
            const std::string_view ref = rest.substr(0, comma);
            rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 2);
            const std::size_t colon = ref.rfind(':');
            BOOST_TEST_REQUIRE(colon != std::string_view::npos, f.id + ": source " + std::string(ref));
            const std::string name(ref.substr(0, colon));
            auto& lines = files[name];
            if (lines.empty()) {
                std::ifstream in(data / name);
                BOOST_TEST_REQUIRE(bool(in), f.id + ": no corpus file " + name);
                for (std::string l; std::getline(in, l);)
                    lines.push_back(l);
            }
            const std::size_t line = std::stoul(std::string(ref.substr(colon + 1)));
            BOOST_TEST_REQUIRE((line >= 1 && line <= lines.size()), f.id + ": line out of range");
            found = found || casefold(lines[line - 1]).find(casefold(f.answer)) != std::string::npos;
        }
        BOOST_TEST(found, f.id + ": the answer \"" + f.answer + "\" is on none of its source lines");
    }
}

BOOST_AUTO_TEST_CASE(qa_blank_phrasings_score_the_rest_of_the_sentence) {
    qa_set set;
    set.facts.push_back({"colour_snow", "x:1", "ак", {"Кышын ___ кар ява.", "Кар нинди? Ул"}, {"кара"}});
    const std::vector<text_request> reqs = qa_requests(set, {});
    BOOST_TEST_REQUIRE(reqs.size() == 4u);
    BOOST_TEST(reqs[0].context == "Кышын ак");
    BOOST_TEST(reqs[0].continuation == " кар ява.");
    BOOST_TEST(reqs[1].context == "Кышын кара");
    BOOST_TEST(reqs[1].continuation == " кар ява.");
    BOOST_TEST(reqs[2].context == "Кар нинди? Ул");
    BOOST_TEST(reqs[3].continuation == " кара");
    // The blank phrasing compares sums (per character would favour the longer choice, "кара", here: -5/4 >
    // -3/2); the completion phrasing divides by the choice's characters: "ак" -3/2 loses to "кара" -5/4.
    const qa_report r = qa_report_from(set, {}, std::vector<double>{-3, -5, -3, -5});
    BOOST_TEST(r.results[0].chosen == 0);
    BOOST_TEST(r.results[1].chosen == 1);
    // A sentence needs exactly one blank with text after it.
    set.facts[0].questions = {"___ кар ___", "Кар ___", "Кар ___ ", "___ кар ява."};
    const std::vector<std::string> problems = qa_problems(set, {.min_facts = 1, .min_phrasings = 1, .distractors = 1});
    BOOST_TEST(problems.size() == 3u);
}

// Both Tatar QA sets are valid.
BOOST_AUTO_TEST_CASE(tatar_qa_file_is_valid) {
    for (const char* name : {"facts.jsonl", "frequent_facts.jsonl"}) {
        BOOST_TEST_CONTEXT(name) { check_tatar_qa_file(fs::path(TINYLM_SOURCE_DIR) / "benchmarks/tatar_qa" / name); }
    }
}

// Both Tatar QA sets: every answer written on one of its source lines; the frequent set's facts are stated at
// least 5 times in the corpus (their `stated` phrase, case-folded, counted over the running text).
BOOST_AUTO_TEST_CASE(tatar_qa_file_is_sourced,
                     tl_test::needs_data("tatar/song_lyrics.txt", "tatar/explanatory_dictionary.txt",
                                         "tatar/bible_nt.txt", "tatar/ntrex128.tat.txt", "tatar/udhr.txt",
                                         "tatar/wikipedia_lines.txt")) {
    for (const char* name : {"facts.jsonl", "frequent_facts.jsonl"}) {
        BOOST_TEST_CONTEXT(name) {
            check_tatar_qa_sources(fs::path(TINYLM_SOURCE_DIR) / "benchmarks/tatar_qa" / name,
                                   tl_test::data_path("tatar"));
        }
    }
}

BOOST_AUTO_TEST_CASE(qa_floors_untrained_and_unigram) {
    const tokenizer& tok = test_tokenizer();
    qa_set set = load_qa(fs::path(TINYLM_SOURCE_DIR) / "benchmarks/tatar_qa/facts.jsonl");
    set.facts.resize(8); // keep the test fast
    // Unigram floor: the choice with the best per-character unigram score, the same for every phrasing.
    unigram_model uni(tok.vocab_size());
    uni.add_text(tok, training_text);
    BOOST_TEST(uni.total() > 0u);
    const qa_report u = evaluate_qa(uni, tok, set);
    BOOST_TEST(u.questions == set.question_count());
    for (const qa_question_result& q : u.results) {
        const std::vector<std::string> choices = qa_choices(set.facts[q.fact]);
        for (std::size_t c = 0; c < choices.size(); ++c) {
            const double direct = uni.loglikelihood(ids_of(tok, " " + choices[c]));
            BOOST_TEST(q.logprobs[c] == direct, boost::test_tools::tolerance(1e-12));
            BOOST_TEST(q.logprobs[q.chosen] / double(code_points(choices[q.chosen])) >=
                       q.logprobs[c] / double(code_points(choices[c])));
        }
    }
    // It ignores the question: a fact whose best choice is unique gets the same pick in every phrasing.
    for (std::size_t f = 0, at = 0; f < set.facts.size(); ++f) {
        const std::size_t n = set.facts[f].questions.size();
        const qa_question_result& first = u.results[at];
        const auto score = [&](std::size_t c) {
            return first.logprobs[c] / double(code_points(qa_choices(set.facts[f])[c]));
        };
        int ties = 0;
        for (std::size_t c = 0; c < first.logprobs.size(); ++c)
            ties += score(c) == score(std::size_t(first.chosen));
        for (std::size_t p = 0; p < n; ++p)
            if (ties == 1) BOOST_TEST(u.results[at + p].chosen == first.chosen);
        at += n;
    }
    // Untrained floor: an initialised, untrained model of the test configuration.
    eval_model m(5);
    const qa_report r = evaluate_qa(m, tok, set);
    BOOST_TEST(r.questions == set.question_count());
    BOOST_TEST(r.facts == 8u);
    BOOST_TEST(r.consistent_correct_facts <= r.consistent_facts);
    BOOST_TEST(r.correct <= r.questions);
    const qa_question_result& q = r.results[4];
    const std::string ctx = set.facts[q.fact].questions[q.phrasing];
    const std::vector<text_request> one = {{ctx, " " + set.facts[q.fact].answer}};
    BOOST_TEST(q.logprobs[0] == loglikelihoods(m, tok, std::span<const text_request>(one))[0].logprob,
               boost::test_tools::tolerance(1e-9));
    BOOST_TEST_MESSAGE("floors on 8 facts: unigram " << u.summary() << "; untrained " << r.summary());
}

// Writes a checkpoint (tinylm's tokenizer.json included), an lm-eval task (YAML + JSONL, 0 and 2 shots) and
// tinylm's own results for tests/reference/lm_eval/compare_lm_eval.py (ctest -L torch).
BOOST_AUTO_TEST_CASE(export_for_lm_eval, *boost::unit_test::disabled()) {
    const char* dir_env = std::getenv("TINYLM_LM_EVAL_DIR");
    BOOST_TEST_REQUIRE(dir_env != nullptr, "set TINYLM_LM_EVAL_DIR");
    const fs::path dir = dir_env;
    // The recipe's configuration (so that examples/06_evaluate can load it too), with weights scaled to
    // std 0.12 so that the choices' scores are far apart compared with f32 rounding.
    decoder<presets::russian_novels_cpu> m(21);
    for (const parameter_entry& e : m.parameter_entries())
        if (e.kind == param_kind::weight || e.kind == param_kind::embedding)
            for (float& w : e.value)
                w *= 6.0f;
    const tokenizer& tok = test_tokenizer();
    save_pretrained(m, dir / "model");
    save_tokenizer_json(tok, (dir / "model" / "tokenizer.json").string());
    std::vector<mc_doc> test = toy_docs();
    // So that acc and acc_norm (per character) and acc_bytes tell apart: a copy of a document where the
    // length normalisation changes tinylm's pick, with that pick as its answer; lm-eval must agree.
    const mc_report base = evaluate_mc(m, tok, test, {});
    for (std::size_t i = 0; i < base.docs.size(); ++i)
        if (base.docs[i].pred != base.docs[i].pred_norm) {
            mc_doc copy = test[i];
            copy.answer = base.docs[i].pred_norm;
            test.push_back(copy);
            break;
        }
    const std::vector<mc_doc> dev = {{"Is the grass green?", {"yes", "no"}, 0},
                                     {"Чыпчык нәрсә ул?", {"кош", "агач", "балык"}, 0},
                                     {"What do cows eat?", {"grass", "stones"}, 0},
                                     {"Тимер нәрсә ул?", {"металл", "кош"}, 0},
                                     {"What is blue?", {"the sky", "the grass"}, 0},
                                     {"Кояш нәрсә ул?", {"йолдыз", "агач"}, 0},
                                     {"Who were Петер and Әндри?", {"балыкчылар", "cows"}, 0}};
    fs::create_directories(dir / "tasks");
    const auto write_jsonl = [](const fs::path& p, const std::vector<mc_doc>& docs) {
        std::ofstream out(p);
        for (const mc_doc& d : docs)
            out << nlohmann::json{{"question", d.question}, {"choices", d.choices}, {"answer", d.answer}}.dump()
                << "\n";
    };
    write_jsonl(dir / "tasks" / "test.jsonl", test);
    write_jsonl(dir / "tasks" / "dev.jsonl", dev);
    nlohmann::json expected = nlohmann::json::object();
    for (int shots : {0, 2}) {
        const std::string name = "tinylm_mc_" + std::to_string(shots) + "shot";
        std::ofstream(dir / "tasks" / (name + ".yaml"))
            << "task: " << name << "\n"
            << "dataset_path: json\n"
            << "dataset_kwargs:\n  data_files:\n"
            << "    test: " << (dir / "tasks" / "test.jsonl").string() << "\n"
            << "    validation: " << (dir / "tasks" / "dev.jsonl").string() << "\n"
            << "test_split: test\nfewshot_split: validation\noutput_type: multiple_choice\n"
            << "doc_to_text: \"Question: {{question}}\\nAnswer:\"\n"
            << "doc_to_choice: choices\ndoc_to_target: answer\n"
            << "num_fewshot: " << shots << "\n"
            << "metric_list:\n"
            << "  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
            << "  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true\n"
            << "  - metric: acc_bytes\n    aggregation: mean\n    higher_is_better: true\n";
        const mc_report rep = evaluate_mc(m, tok, test, dev, {.num_fewshot = shots});
        nlohmann::json docs = nlohmann::json::array();
        for (const mc_doc_result& d : rep.docs)
            docs.push_back(nlohmann::json{{"context", d.context},
                                          {"logprobs", d.logprobs},
                                          {"acc", d.pred == d.answer},
                                          {"acc_norm", d.pred_norm == d.answer},
                                          {"acc_bytes", d.pred_bytes == d.answer}});
        expected[name] = {{"acc", rep.acc}, {"acc_norm", rep.acc_norm}, {"acc_bytes", rep.acc_bytes}, {"docs", docs}};
        BOOST_TEST_MESSAGE(name << ": " << test.size() << " documents, acc " << rep.acc << ", acc_norm " << rep.acc_norm
                                << ", acc_bytes " << rep.acc_bytes);
    }
    std::ofstream(dir / "tinylm_results.json") << expected.dump(2) << "\n";
}

BOOST_AUTO_TEST_SUITE_END()
