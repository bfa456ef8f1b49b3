// Compiled against tinylm::tokenizer alone (no Eigen, oneDNN or OpenMP include paths): the tokenizer, its chat
// templates and the Jinja engine must not include a math backend.
#include <tinylm/jinja/interpreter.hpp>
#include <tinylm/tokenizer/add_tokens.hpp>
#include <tinylm/tokenizer/bpe_trainer.hpp>
#include <tinylm/tokenizer/chat_template.hpp>
#include <tinylm/tokenizer/hf_json.hpp>
#include <tinylm/tokenizer/tokenizer.hpp>
#include <tinylm/tokenizer/tokenizer_config.hpp>
#include <tinylm/tokenizer/wordpiece_json.hpp>

#if defined(EIGEN_WORLD_VERSION) || defined(DNNL_VERSION_MAJOR) || defined(_OPENMP)
#error "tinylm/tokenizer includes a math backend"
#endif

int tinylm_tokenizer_headers_only() { return 0; }
