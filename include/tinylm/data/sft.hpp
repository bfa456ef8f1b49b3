// tinylm/data/sft.hpp: supervised fine-tuning data, from files to training rows (docs/sft.md).
//
//   auto convs = tl::data::read_sft(path);                                       // sft_formats.hpp
//   auto examples = tl::data::tokenize_conversations(tok, tmpl, convs, {.max_length = T}); // sft_labels.hpp
//   auto rows = tl::data::pack_examples(examples, T, pad_id);                   // sft_batch.hpp
//   float loss = model.loss(rows.ids_view(0, B), rows.targets_view(0, B), rows.doc_start_view(0, B));
#pragma once

#include <tinylm/data/sft_batch.hpp>
#include <tinylm/data/sft_formats.hpp>
#include <tinylm/data/sft_labels.hpp>
