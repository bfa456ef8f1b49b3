// tinylm/model/model.hpp: the Model concept: all that the trainer, checkpoints, io, eval and optimizers may
// call on a model. decoder<...> (model/decoder.hpp) models it; an encoder will too. Optimizers need even
// less: only the parameter entries (model/parameter.hpp).
//
//   config()                       the configuration in force (sizes resolved)
//   parameter_entries()            every parameter, Hugging Face names, fixed order; `trainable`, `row_mask`
//   trainable_entries()            those that train now
//   set_trainable(group|name, on)  freeze / unfreeze at run time; set_row_mask(group, mask)
//   zero_grad(), plan(B, T), set_gradient_checkpointing(on)
//   loss(ids, targets, doc_start)  -> mean cross-entropy, activations kept; backward(scale) adds gradients
//   eval_loss(...)                 the same without dropout (validation); counted_targets()
//   forward(ids, doc_start, train) -> final hidden states (B*T, d); backward_from_hidden(dh): any loss
// A generative model adds logits(ids, out), make_cache(B, capacity) and forward_cached(cache, ids, last).
#pragma once

#include <tinylm/model/config.hpp>
#include <tinylm/model/parameter.hpp>

#include <concepts>
#include <vector>

namespace tl {

template <class M>
concept Model = requires(M& m, const M& cm, cview<token_t> ids, cview<index_t> doc, cview<float> dh) {
    { cm.config() } -> std::convertible_to<const model_config&>;
    { cm.parameter_entries() } -> std::convertible_to<const std::vector<parameter_entry>&>;
    { cm.trainable_entries() } -> std::convertible_to<const std::vector<parameter_entry>&>;
    m.set_trainable(param_group::embedding, true);
    m.zero_grad();
    m.plan(index_t{1}, index_t{1});
    m.set_gradient_checkpointing(true);
    { m.loss(ids, ids, doc) } -> std::convertible_to<float>;
    { m.eval_loss(ids, ids, doc) } -> std::convertible_to<float>;
    m.backward(1.0);
    { cm.counted_targets() } -> std::convertible_to<index_t>;
    { m.forward(ids, doc, true) } -> std::convertible_to<cview<float>>;
    m.backward_from_hidden(dh);
};

template <class M>
concept GenerativeModel = Model<M> &&
    requires(M& m, const M& cm, typename M::kv_cache& cache, cview<token_t> ids, tensor_view<float> out) {
    m.logits(ids, out);
    { cm.make_cache(index_t{1}, index_t{1}) } -> std::same_as<typename M::kv_cache>;
    cm.forward_cached(cache, ids, out);
};

} // namespace tl
