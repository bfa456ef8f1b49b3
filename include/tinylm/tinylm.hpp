// tinylm/tinylm.hpp: everything in the math half, for convenience. Prefer including what you use.
#pragma once

#include <tinylm/backend/default.hpp>
#include <tinylm/embed/ranking_loss.hpp>
#include <tinylm/model/decoder.hpp>
#include <tinylm/model/encoder.hpp>
#include <tinylm/model/presets.hpp>
#include <tinylm/ops/pooling.hpp>
#include <tinylm/optim/adamw.hpp>
#include <tinylm/optim/clip.hpp>
#include <tinylm/optim/schedule.hpp>
#include <tinylm/optim/sgd.hpp>
