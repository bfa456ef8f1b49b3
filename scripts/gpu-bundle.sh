#!/usr/bin/env bash
# scripts/gpu-bundle.sh: builds the GPU programs HERE (a machine with nvcc and the Debian dev packages, no GPU
# needed) and packs them, with the shared libraries a GPU machine's image may lack, into the ignored folder .gpu/,
# which the device tool carries (`carry: [".gpu"]`) so that scripts/gpu-check.sh runs them there without building
# (docs/gpu.md, "What a GPU session runs"). Run it before every GPU session, after the last change to the code.
#
#   scripts/gpu-bundle.sh [--build-only]     (--build-only: configure and build build-gpu, no .gpu/)
#
# Environment: GPU_BUILD_DIR (default build-gpu), CUDA_ARCHS (default 90: sm_90 code plus PTX, H100/H200),
# JOBS (default 1: this machine's 2 cores are shared), GPU_EXTRA_PROGRAMS (more programs, space-separated, as
# paths in the build tree: examples/05_tatar/05_tatar), GPU_BUNDLE_DATA (folders of the data dir, ../shared/data
# or TINYLM_DATA_DIR, to carry along as .gpu/data.tar.xz: "russian_novels/corpus"; mind the 64 MiB),
# GPU_BUNDLE_PREPARED (a data cache 04_russian_novels --prepare-only wrote, e.g. runs/r150/data_ctx512: its
# train.bin, val.bin, tokenizer.json and summary.json as .gpu/prepared.tar.xz, 11 MB for the 150M preset's; the
# novels stage of gpu-check.sh trains from it, no corpus needed), GPU_BUNDLE_NCCL (default OFF: ON links NCCL, for a GPU machine known to have libnccl.so.2).
#
# What .gpu/ holds:
#   bin/        the programs, stripped
#   lib/        every shared library they need that is neither glibc's, the compiler runtime's nor CUDA's
#               (oneDNN, Boost.Test, utf8proc, ...: Debian packages an Ubuntu image with PyTorch lacks), as .xz:
#               scripts/gpu-env.sh unpacks them where they run
#   fallback/   libstdc++, libgomp and libgcc_s from here (.xz too): gpu-check.sh adds them to LD_LIBRARY_PATH only when
#               the GPU machine's own are missing or too old for these programs (a newer system copy is
#               backward compatible, and one process must not mix two libstdc++)
#   data.tar.xz only with GPU_BUNDLE_DATA: those folders of the data dir (gpu-env.sh unpacks it under /tmp)
#   prepared.tar.xz  only with GPU_BUNDLE_PREPARED: the folder (named as it is, data_ctx512) with its four files
#   MANIFEST    the git commit, the build's flags and compilers, the symbol versions required, every file's size
#               and sha256, the CUDA libraries expected on the GPU machine
# Not bundled: libcudart, libcublasLt and the rest of the CUDA toolkit (CUDA 13 is on the GPU machine, and they
# are hundreds of MB), nor glibc (this build needs at most the GLIBC version the MANIFEST names; Ubuntu 24.04 has
# 2.39).
#
# Checks here before it finishes: with `env -i` and only the bundle's LD_LIBRARY_PATH, ldd resolves every library
# of every program inside .gpu/, from the system's glibc and compiler runtime, or (the CUDA ones) anywhere;
# test_cuda_math passes; test_cuda_kernels exits 77 (skipped: no GPU here). Exit status non-zero if any fails.
set -euo pipefail
trap 'echo "gpu-bundle: failed at line $LINENO" >&2' ERR
cd "$(dirname "$0")/.."
root=$PWD
build=${GPU_BUILD_DIR:-build-gpu}
archs=${CUDA_ARCHS:-90}
jobs=${JOBS:-1}
bundle=.gpu
nvcc=${CUDACXX:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}

# The programs a GPU session runs: build target and its place in the build tree. Optional ones are bundled when
# their target exists (another branch adds `--device cuda` to 04_russian_novels).
required=(tests/cuda/test_cuda_kernels tests/cuda/test_cuda_math benchmarks/train_throughput/bench_train)
optional=(examples/04_russian_novels/04_russian_novels)
for extra in ${GPU_EXTRA_PROGRAMS:-}; do optional+=("$extra"); done

flags=(-DCMAKE_BUILD_TYPE=Release -DTINYLM_WERROR=ON -DTINYLM_WITH_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc"
  -DCMAKE_CUDA_ARCHITECTURES="$archs" -DTINYLM_BUILD_TESTS=ON -DTINYLM_BUILD_BENCHMARKS=ON
  -DTINYLM_BUILD_EXAMPLES=ON -DTINYLM_BUILD_TOOLS=OFF -DTINYLM_WITH_MPI=OFF
  -DTINYLM_WITH_NCCL="${GPU_BUNDLE_NCCL:-OFF}")
# MPI off: one GPU per process here, and Open MPI's libraries and plugins would not travel as plain files. NCCL off
# unless GPU_BUNDLE_NCCL=ON: libnccl.so.2 (218 MB) cannot travel, and a GPU image without it would leave every
# program unable to start; the lent machines have one GPU, where only the one-rank NCCL case would use it.
echo "gpu-bundle: configuring $build: ${flags[*]}"
mkdir -p "$build"
cmake -S . -B "$build" "${flags[@]}" >"$build/gpu-bundle.configure.log" 2>&1 || {
  tail -30 "$build/gpu-bundle.configure.log"
  exit 1
}
targets_help=$(cmake --build "$build" --target help)
targets=()
for p in "${required[@]}"; do targets+=("$(basename "$p")"); done
for p in "${optional[@]}"; do
  if grep -qw -- "$(basename "$p")" <<<"$targets_help"; then
    required+=("$p")
    targets+=("$(basename "$p")")
  else
    echo "gpu-bundle: no target $(basename "$p") in this tree; not bundled"
  fi
done
echo "gpu-bundle: building ${targets[*]} (-j$jobs)"
nice -n 10 cmake --build "$build" -j"$jobs" --target "${targets[@]}"
[ "${1:-}" = "--build-only" ] && exit 0

rm -rf "$bundle"
mkdir -p "$bundle/bin" "$bundle/lib" "$bundle/fallback"
grep -qx '/.gpu/' .gitignore || echo "gpu-bundle: warning: /.gpu/ is not in .gitignore" >&2

# A library is the CUDA toolkit's, glibc's or the compiler runtime's by its name.
cuda_names='cuda|cudart|cublas|cublasLt|cudnn|nvrtc|nvJitLink|cufft|curand|cusparse|cusolver|nccl|nvidia-ml'
is_cuda() { [[ $1 =~ ^lib($cuda_names)[._-] ]]; }
is_glibc() { [[ $1 =~ ^(ld-linux.*|libc|libm|libdl|libpthread|librt|libresolv|libutil|libmvec)\.so ]]; }
is_runtime() { [[ $1 =~ ^(libstdc\+\+|libgomp|libgcc_s)\.so ]]; }

cuda_needed=()
for p in "${required[@]}"; do
  exe="$build/$p"
  [ -x "$exe" ] || { echo "gpu-bundle: $exe was not built" >&2; exit 1; }
  cp "$exe" "$bundle/bin/"
  strip --strip-unneeded "$bundle/bin/$(basename "$p")"
  while read -r name _ path _; do
    [ "$path" = "not" ] && { echo "gpu-bundle: $exe: $name not found here" >&2; exit 1; }
    if is_cuda "$name"; then
      cuda_needed+=("$name")
    elif is_glibc "$name" || [ -z "$path" ]; then
      :
    elif is_runtime "$name"; then
      cp -L "$path" "$bundle/fallback/$name"
    else
      cp -L "$path" "$bundle/lib/$name"
    fi
  done < <(ldd "$exe" | grep '=>')
done
strip --strip-unneeded "$bundle"/lib/* "$bundle"/fallback/* 2>/dev/null || true
if [ -n "${GPU_BUNDLE_DATA:-}" ]; then
  data_dir=${TINYLM_DATA_DIR:-$root/../shared/data}
  # shellcheck disable=SC2086 # a list of folders
  nice -n 10 tar -C "$data_dir" -cf - $GPU_BUNDLE_DATA | xz -6 -T1 >"$bundle/data.tar.xz"
fi
if [ -n "${GPU_BUNDLE_PREPARED:-}" ]; then
  prepared=${GPU_BUNDLE_PREPARED%/}
  prepared_files=(train.bin val.bin tokenizer.json summary.json) # what 04 needs to skip the corpus (its main.cpp)
  for f in "${prepared_files[@]}"; do
    [ -s "$prepared/$f" ] || { echo "gpu-bundle: GPU_BUNDLE_PREPARED: no $prepared/$f (run 04_russian_novels \
--preset 150m --prepare-only --out runs/r150 first)" >&2; exit 1; }
  done
  name=$(basename "$prepared")
  nice -n 10 tar -C "$(dirname "$prepared")" -cf - "${prepared_files[@]/#/$name/}" | xz -6 -T1 >"$bundle/prepared.tar.xz"
fi
needs() { # the highest version of symbol set $1 (GLIBC, GLIBCXX, ...) the programs and libraries ask for
  for f in "$bundle"/bin/* "$bundle"/lib/*; do objdump -T "$f" 2>/dev/null; done |
    grep -o "$1_[0-9][0-9.]*" | sort -uV | tail -1
}
needs_line="$(needs GLIBC), $(needs GLIBCXX), $(needs CXXABI), $(needs GOMP)"
# xz: oneDNN alone is 40 MB, 7 MB packed; scripts/gpu-env.sh unpacks them on the GPU machine (half a second).
nice -n 10 xz -6 -T1 "$bundle"/lib/* "$bundle"/fallback/*

# MANIFEST: what was built, from what, with what, and what it needs from the GPU machine.
{
  echo "# .gpu: the GPU programs of tinylm, built by scripts/gpu-bundle.sh; run with scripts/gpu-check.sh"
  echo "commit: $(git rev-parse HEAD)$(git diff --quiet HEAD -- . ':!.gpu' || echo ' (with uncommitted changes)')"
  echo "branch: $(git rev-parse --abbrev-ref HEAD)"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(. /etc/os-release && echo "$PRETTY_NAME"), $(uname -m)"
  echo "cmake flags: ${flags[*]}"
  echo "cxx: $(grep -m1 CMAKE_CXX_COMPILER: "$build/CMakeCache.txt" | cut -d= -f2) ($(c++ --version | head -1))"
  echo "nvcc: $("$nvcc" --version | tail -1)"
  echo "cuda flags: $(sed -n 's/^CUDA_FLAGS = //p' "$build/CMakeFiles/tinylm_cuda.dir/flags.make")"
  echo "programs: ${targets[*]}"
  echo "needs at most: $needs_line (programs and lib/)"
  echo "cuda libraries expected on the GPU machine: $(printf '%s\n' "${cuda_needed[@]}" | sort -u | tr '\n' ' ')"
  echo "data: ${GPU_BUNDLE_DATA:-none}"
  echo "prepared: ${GPU_BUNDLE_PREPARED:-none}"
  echo "files (bytes, sha256):"
  (cd "$bundle" && find bin lib fallback -type f && find . -maxdepth 1 -name '*.tar.xz' -printf '%P\n') | sort |
    while read -r f; do
      printf '  %-48s %10d %s\n' "$f" "$(stat -c %s "$bundle/$f")" "$(sha256sum "$bundle/$f" | cut -c1-16)"
    done
  echo "bundle bytes: $(du -cb "$bundle" | tail -1 | cut -f1)"
  echo "working tree bytes (git ls-files): $(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)"
} >"$bundle/MANIFEST"

# Checks, with the libraries unpacked as gpu-check.sh unpacks them: every library resolves inside the bundle (or
# is glibc's, the runtime's or CUDA's), with nothing of this machine's environment but the bundle's
# LD_LIBRARY_PATH.
status=0
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# shellcheck source=scripts/gpu-env.sh
source scripts/gpu-env.sh
gpu_unpack "$bundle" "$scratch"
unpacked=$scratch
for exe in "$bundle"/bin/*; do
  while read -r name _ path _; do
    if is_cuda "$name" || is_glibc "$name" || is_runtime "$name"; then continue; fi
    case "$path" in
      "$unpacked"/lib/*) ;;
      *) echo "gpu-bundle: CHECK FAILED: $exe needs $name from $path, outside the bundle" >&2; status=1 ;;
    esac
  done < <(env -i LD_LIBRARY_PATH="$unpacked/lib" ldd "$exe" | grep '=>')
done
run_bundled() { env -i PATH=/usr/bin:/bin HOME="${HOME:-/tmp}" LD_LIBRARY_PATH="$unpacked/lib" "$@"; }
if run_bundled "$bundle/bin/test_cuda_math" >"$build/gpu-bundle.math.log" 2>&1; then
  echo "gpu-bundle: test_cuda_math from the bundle passes here"
else
  echo "gpu-bundle: CHECK FAILED: test_cuda_math from the bundle (log $build/gpu-bundle.math.log)" >&2
  status=1
fi
rc=0
run_bundled "$bundle/bin/test_cuda_kernels" >"$build/gpu-bundle.kernels.log" 2>&1 || rc=$?
if [ "$rc" -eq 77 ]; then
  echo "gpu-bundle: test_cuda_kernels from the bundle exits 77 here (skipped: no GPU)"
elif command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 && [ "$rc" -eq 0 ]; then
  echo "gpu-bundle: test_cuda_kernels from the bundle passes (a GPU is visible here)"
else
  echo "gpu-bundle: CHECK FAILED: test_cuda_kernels from the bundle exited $rc (log $build/gpu-bundle.kernels.log)" >&2
  status=1
fi
if [ -e "$bundle/prepared.tar.xz" ] && [ -x "$bundle/bin/04_russian_novels" ]; then
  # 04 takes the unpacked cache without a corpus, as the novels stage of gpu-check.sh runs it.
  name=$(basename "${GPU_BUNDLE_PREPARED%/}")
  mkdir -p "$scratch/novels" && cp -r "$unpacked/prepared/$name" "$scratch/novels/"
  if run_bundled "$bundle/bin/04_russian_novels" --preset 150m --prepare-only --data-dir /nonexistent \
    --out "$scratch/novels" >"$build/gpu-bundle.prepared.log" 2>&1; then
    echo "gpu-bundle: 04_russian_novels from the bundle takes the prepared $name without a corpus"
  else
    echo "gpu-bundle: CHECK FAILED: 04_russian_novels on the prepared $name (log $build/gpu-bundle.prepared.log)" >&2
    status=1
  fi
fi
cat "$bundle/MANIFEST"
tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
total=$(($(du -cb "$bundle" | tail -1 | cut -f1) + tree))
echo "gpu-bundle: bundle + working tree = $((total / 1048576)) MiB of the device tool's 64 MiB"
[ "$total" -lt $((60 * 1048576)) ] || { echo "gpu-bundle: CHECK FAILED: too large to carry" >&2; status=1; }
exit $status
