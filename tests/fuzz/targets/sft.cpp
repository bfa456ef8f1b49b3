// SFT data files: the same bytes as JSONL in every record layout, as a JSON array, and as a rated CSV.
#include "../fuzz_target.hpp"

#include <tinylm/data/sft_formats.hpp>

TINYLM_FUZZ_TARGET(sft) {
    using tl::data::sft_format;
    auto& scratch = tl_fuzz::scratch::get();
    const auto jsonl = scratch.write("data.jsonl", in), json = scratch.write("data.json", in),
               csv = scratch.write("data.csv", in);
    // Every reader on the same bytes; a refusal is fine as long as it names the file.
    for (sft_format f : {sft_format::alpaca, sft_format::alpaca_system, sft_format::seed_tasks, sft_format::messages,
                         sft_format::prompt_completion})
        tl_fuzz::attempt([&] { (void)tl::data::read_sft(jsonl, f); });
    tl_fuzz::attempt([&] { (void)tl::data::read_sft(json, sft_format::alpaca_system); });
    tl::data::csv_options rated;
    rated.rating_column = "rating";
    rated.min_rating = 2;
    tl_fuzz::attempt([&] { (void)tl::data::read_rated_csv(csv, rated); });
    // Last, as a user's file would be read: the layout detected from the first character and the content.
    const auto text = tl_fuzz::text(in);
    const auto first = text.find_first_not_of(" \t\r\n");
    const char c = first == std::string_view::npos ? ' ' : text[first];
    (void)tl::data::read_sft(c == '{' ? jsonl : c == '[' ? json : csv);
}
