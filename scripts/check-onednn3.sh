#!/usr/bin/env bash
# Configures tinylm against oneDNN 3.x, builds test_ops and runs its oneDNN cases: CMake must accept 3.x and
# dnnl_sgemm must link and agree with the reference backend. The oneDNN comes from PyPI (the onednn and
# onednn-devel wheels: libdnnl.so.3 and the headers). The wheels ship no CMake package, so this script writes a
# minimal one of the same shape as oneDNN's own (target DNNL::dnnl, a SameMajorVersion version file, which is
# what made `find_package(dnnl 2.6)` refuse 3.x).
#   scripts/check-onednn3.sh                       download the wheels (needs the network once)
#   TINYLM_ONEDNN3_PREFIX=/opt/onednn3 scripts/check-onednn3.sh   use (or fill) that prefix
# ctest -L slow runs it as onednn3_build.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${TINYLM_ONEDNN3_BUILD_DIR:-build-onednn3}
# ctest gives an absolute build folder; $PWD/$build would then be a folder inside the source tree.
case $build in /*) build_dir=$build ;; *) build_dir=$PWD/$build ;; esac
prefix=${TINYLM_ONEDNN3_PREFIX:-$build_dir/onednn3}
python=${TINYLM_PYTHON:-python3}

if [ ! -f "$prefix/include/oneapi/dnnl/dnnl_version.h" ] || [ ! -e "$prefix/lib/libdnnl.so.3" ]; then
  mkdir -p "$prefix/wheels"
  "$python" -m pip download --no-deps -d "$prefix/wheels" onednn onednn-devel
  "$python" - "$prefix" <<'PY'
import glob, os, sys, zipfile
prefix = sys.argv[1]
for wheel in glob.glob(os.path.join(prefix, "wheels", "*.whl")):
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            parts = name.split("/")
            if len(parts) > 3 and parts[0].endswith(".data") and parts[1] == "data" and not name.endswith("/"):
                out = os.path.join(prefix, *parts[2:])
                os.makedirs(os.path.dirname(out), exist_ok=True)
                with open(out, "wb") as f:
                    f.write(z.read(name))
PY
fi

version=$(awk '/define DNNL_VERSION_(MAJOR|MINOR|PATCH)/ {v = v (v == "" ? "" : ".") $3} END {print v}' \
  "$prefix/include/oneapi/dnnl/dnnl_version.h")
echo "check-onednn3: oneDNN $version in $prefix"
lib=$(ls "$prefix"/lib/libdnnl.so.3 2>/dev/null || ls "$prefix"/lib/libdnnl.so.3.* | head -1)
mkdir -p "$prefix/lib/cmake/dnnl"
cat > "$prefix/lib/cmake/dnnl/dnnl-config.cmake" <<CMAKE
if(NOT TARGET DNNL::dnnl)
  add_library(DNNL::dnnl SHARED IMPORTED)
  set_target_properties(DNNL::dnnl PROPERTIES IMPORTED_LOCATION "$lib"
                                              INTERFACE_INCLUDE_DIRECTORIES "$prefix/include")
endif()
CMAKE
cat > "$prefix/lib/cmake/dnnl/write-version.cmake" <<'CMAKE'
include(CMakePackageConfigHelpers)
write_basic_package_version_file("${OUT}" VERSION "${VERSION}" COMPATIBILITY SameMajorVersion)
CMAKE
cmake -DVERSION="$version" -DOUT="$prefix/lib/cmake/dnnl/dnnl-config-version.cmake" \
  -P "$prefix/lib/cmake/dnnl/write-version.cmake"

cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DTINYLM_WERROR=ON -DTINYLM_BUILD_EXAMPLES=OFF \
  -Ddnnl_DIR="$prefix/lib/cmake/dnnl" | grep -E "oneDNN|Error" || true
grep -q "^dnnl_DIR:[A-Z]*=$prefix/lib/cmake/dnnl$" "$build/CMakeCache.txt" ||
  { echo "check-onednn3: $build did not pick the oneDNN of $prefix"; exit 1; }
# PyPI's libdnnl.so.3 is Intel's oneAPI build (it needs libtbb, libsycl and the Intel compiler runtime); where
# those are missing, only compile the oneDNN backend's test against the 3.x headers.
if ldd "$lib" | grep -q "not found"; then
  echo "check-onednn3: $lib lacks libraries here ($(ldd "$lib" | awk '/not found/ {print $1}' | tr '\n' ' '));" \
    "compiling tests/ops/test_backends.cpp only"
  cmake --build "$build/tests" --target ops/test_backends.cpp.o -- -j "${TINYLM_JOBS:-$(nproc)}" ||
    make -C "$build/tests" ops/test_backends.cpp.o
  echo "check-onednn3: configured and compiled against oneDNN $version"
  exit 0
fi
cmake --build "$build" -j "${TINYLM_JOBS:-$(nproc)}" --target test_ops
LD_LIBRARY_PATH="$prefix/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" OMP_WAIT_POLICY=PASSIVE \
  "$build/tests/test_ops" --run_test=backends
echo "check-onednn3: built and tested against oneDNN $version"
