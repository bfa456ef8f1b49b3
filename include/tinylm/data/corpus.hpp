// tinylm/data/corpus.hpp: the whole corpus pipeline (readers, cleaning stages, statistics, token shards).
// Includes no math backend; link tinylm::data (nlohmann_json, utf8proc).
#pragma once

#include <tinylm/data/dedup.hpp>
#include <tinylm/data/filters.hpp>
#include <tinylm/data/langid.hpp>
#include <tinylm/data/normalize.hpp>
#include <tinylm/data/pipeline.hpp>
#include <tinylm/data/reader.hpp>
#include <tinylm/data/sentences.hpp>
#include <tinylm/data/shards.hpp>
#include <tinylm/data/stats.hpp>
#include <tinylm/data/utf8.hpp>
