// tinylm/eval/stop_strings.hpp: stop generating when the text contains one of the given strings, without ever
// printing part of one.
//
//   tl::stop_strings stops({"\n\n", "User:"});
//   out << stops.feed(piece);            // text that can no longer turn into a stop string
//   if (stops.stopped()) ...             // a stop string appeared: it and what follows are dropped
//   out << stops.flush();                // at the end, the text held back
//
// feed() holds back the longest end of the text that is the start of a stop string, so a stop string split
// across tokens is still caught. Stop strings are matched on decoded text (as OpenAI's `stop` and Hugging Face's
// stop_strings are), not on token ids.
#pragma once

#include <tinylm/core/error.hpp>

#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

namespace tl {

class stop_strings {
public:
    stop_strings() = default;
    explicit stop_strings(std::vector<std::string> stops) : stops_(std::move(stops)) {
        for (const std::string& s : stops_)
            check(!s.empty(), "stop_strings: a stop string is empty");
    }

    bool stopped() const { return stopped_; }
    const std::vector<std::string>& strings() const { return stops_; }

    // The part of held + text that is safe to emit; after a stop string appears, the text before it.
    std::string feed(std::string_view text) {
        if (stopped_) return {};
        held_ += text;
        std::size_t first = std::string::npos;
        for (const std::string& s : stops_)
            first = std::min(first, held_.find(s));
        if (first != std::string::npos) {
            stopped_ = true;
            std::string out = held_.substr(0, first);
            held_.clear();
            return out;
        }
        std::size_t keep = 0; // the longest end of held_ that starts a stop string
        for (const std::string& s : stops_)
            for (std::size_t k = std::min(s.size() - 1, held_.size()); k > keep; --k)
                if (std::string_view(held_).substr(held_.size() - k) == std::string_view(s).substr(0, k)) {
                    keep = k;
                    break;
                }
        std::string out = held_.substr(0, held_.size() - keep);
        held_.erase(0, held_.size() - keep);
        return out;
    }

    // The text held back at the end of generation (empty after a stop).
    std::string flush() {
        std::string out;
        out.swap(held_);
        return stopped_ ? std::string{} : out;
    }

private:
    std::vector<std::string> stops_;
    std::string held_;
    bool stopped_ = false;
};

} // namespace tl
