// Compiled against tinylm::data alone (no Eigen, oneDNN or OpenMP include paths): the data half must not
// include a math backend.
#include <tinylm/data/corpus.hpp>
#include <tinylm/data/sft.hpp>

#if defined(EIGEN_WORLD_VERSION) || defined(DNNL_VERSION_MAJOR)
#error "tinylm/data includes a math backend"
#endif

int tinylm_data_headers_only() { return 0; }
