// jokes_data.hpp: the jokes of 08_jokes_lora as conversations "Расскажи анекдот про <тему>" -> joke.
#pragma once

#include <tinylm/data/sft_formats.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace jokes {

namespace fs = std::filesystem;

inline const std::string ask = "Расскажи анекдот";

// anekdoty_themed.jsonl: {"theme": "Анекдоты про врачей", "text": ...}. Themes that are not "Анекдоты про X"
// (a few rows of the scrape are broken) get the plain request.
inline std::vector<tl::data::conversation> read_themed(const fs::path& path, std::size_t limit) {
    std::vector<tl::data::conversation> out;
    std::ifstream in(path, std::ios::binary);
    std::string line;
    for (std::size_t n = 1; std::getline(in, line) && (limit == 0 || out.size() < limit); ++n) {
        if (line.empty()) continue;
        const auto j = nlohmann::json::parse(line);
        const std::string theme = j.at("theme").get<std::string>(), text = j.at("text").get<std::string>();
        const std::string prefix = "Анекдоты про ";
        const std::string prompt = theme.starts_with(prefix) ? ask + " про " + theme.substr(prefix.size()) : ask + ".";
        out.push_back({{{"user", prompt}, {"assistant", text}}, path.string() + ":" + std::to_string(n)});
    }
    return out;
}

// fortune(6) files: entries separated by lines holding only '%'. Attribution lines ("\t\t-- Author") are
// dropped; the file name gives the theme where it names one.
inline const std::map<std::string, std::string> fortune_themes = {{"armenian", "армянское радио"},
                                                                  {"computer", "компьютеры"},
                                                                  {"programming", "программистов"},
                                                                  {"M$", "Microsoft"},
                                                                  {"drink", "выпивку"},
                                                                  {"love", "любовь"},
                                                                  {"love_s", "любовь"},
                                                                  {"lovers", "влюблённых"},
                                                                  {"man_and_woman", "мужчин и женщин"},
                                                                  {"polit", "политику"},
                                                                  {"war", "войну"},
                                                                  {"work", "работу"},
                                                                  {"education", "учёбу"},
                                                                  {"wealth", "деньги"},
                                                                  {"friendship", "дружбу"},
                                                                  {"time", "время"},
                                                                  {"life", "жизнь"},
                                                                  {"ill", "болезни"},
                                                                  {"fidelity", "верность"},
                                                                  {"treason", "измену"},
                                                                  {"success", "успех"},
                                                                  {"future", "будущее"},
                                                                  {"knowledge", "знания"},
                                                                  {"happy", "счастье"},
                                                                  {"truth", "правду"},
                                                                  {"murphy", "законы Мэрфи"},
                                                                  {"russia_today", "Россию"},
                                                                  {"art", "искусство"},
                                                                  {"book", "книги"},
                                                                  {"flirt", "флирт"},
                                                                  {"foolish", "глупость"},
                                                                  {"genious", "гениев"},
                                                                  {"relations", "отношения"}};

inline bool valid_utf8(std::string_view s) {
    for (std::size_t i = 0; i < s.size();) {
        const auto c = static_cast<unsigned char>(s[i]);
        const std::size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (n == 0 || i + n > s.size()) return false;
        for (std::size_t k = 1; k < n; ++k)
            if ((static_cast<unsigned char>(s[i + k]) >> 6) != 2) return false;
        i += n;
    }
    return true;
}

inline std::vector<tl::data::conversation> read_fortunes(const fs::path& dir, std::size_t max_bytes) {
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(dir)) {
        const auto name = e.path().filename().string();
        // Skip the strfile indexes (.dat), the .u8 links to the same files, and one file of explicit content.
        if (e.is_regular_file() && !e.is_symlink() && e.path().extension() != ".dat" && e.path().extension() != ".u8" &&
            name != "sex")
            files.push_back(e.path());
    }
    std::sort(files.begin(), files.end());
    std::vector<tl::data::conversation> out;
    for (const auto& f : files) {
        const auto theme = fortune_themes.find(f.filename().string());
        const std::string prompt = theme == fortune_themes.end() ? ask + "." : ask + " про " + theme->second;
        std::ifstream in(f, std::ios::binary);
        std::string line, entry;
        std::size_t n = 0, start = 1;
        auto flush = [&] {
            while (!entry.empty() && (entry.back() == '\n' || entry.back() == ' '))
                entry.pop_back();
            if (!entry.empty() && entry.size() <= max_bytes && valid_utf8(entry))
                out.push_back({{{"user", prompt}, {"assistant", entry}}, f.string() + ":" + std::to_string(start)});
            entry.clear();
        };
        while (std::getline(in, line)) {
            ++n;
            if (!line.empty() && line.back() == '\r') line.pop_back();
            if (line == "%") {
                flush();
                start = n + 1;
                continue;
            }
            const auto first = line.find_first_not_of(" \t");
            if (first != std::string::npos && line.compare(first, 2, "--") == 0 && first > 0) continue; // attribution
            entry += line + "\n";
        }
        flush();
    }
    return out;
}

} // namespace jokes
