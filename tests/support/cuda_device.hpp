// Test cases that need a CUDA device: `BOOST_AUTO_TEST_CASE(name, tl_test::needs_device())` is skipped without one
// (counted as a data skip: an executable whose cases all skipped exits with 77, which ctest reports as skipped).
#pragma once

#include "data.hpp"

#include <tinylm/cuda/device.hpp>

#include <boost/test/unit_test.hpp>

#include <cstdio>

namespace tl_test {

// (A member, so that GCC 12 does not warn that boost::function copies an empty functor "uninitialized".)
struct device_precondition {
    const char* needs = "a CUDA device";
    boost::test_tools::assertion_result operator()(boost::unit_test::test_unit_id id) const {
        const bool ok = tl::gpu::device_count() > 0;
        boost::test_tools::assertion_result r(ok);
        if (!ok) {
            ++data_skips();
            r.message() << "needs " << needs;
            std::printf("SKIPPED %s: no CUDA device (cudaGetDeviceCount)\n",
                        boost::unit_test::framework::get(id, boost::unit_test::TUT_ANY).full_name().c_str());
            std::fflush(stdout);
        }
        return r;
    }
};
inline boost::unit_test::decorator::collector_t& needs_device() {
    return *boost::unit_test::precondition(device_precondition{});
}

} // namespace tl_test
