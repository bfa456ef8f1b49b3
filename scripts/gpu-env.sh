# shellcheck shell=bash
# scripts/gpu-env.sh: sourced (bash) by scripts/gpu-check.sh and scripts/gpu-bundle.sh to make a bundle's programs
# runnable. `gpu_bundle_env DIR` unpacks DIR/lib/*.xz, DIR/fallback/*.xz and DIR/data.tar.xz into a folder under
# /tmp, once (the bundle carries them xz-compressed to fit the device tool's 64 MiB), then exports
# LD_LIBRARY_PATH: the unpacked lib, the directories of CUDA's libraries where the loader would not find them
# itself, and the unpacked fallback only when the system's libstdc++, libgomp or libgcc_s are missing or older than
# the programs need. Prints what it chose.

# Directories holding CUDA 13's libcudart/libcublasLt/libcublas (and NCCL's libnccl, which tinylm::cuda links when
# it was found: gpu::nccl_communicator) when the loader's cache has not got them: the toolkit's, or the nvidia-*
# wheels beside the machine's PyTorch.
gpu_cuda_dirs() {
  local lib found sp roots=(/usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib)
  for sp in /usr/local/cuda-*/lib64; do [ -d "$sp" ] && roots+=("$sp"); done
  while read -r sp; do [ -d "$sp/nvidia" ] && roots+=("$sp/nvidia"); done \
    < <(python3 -c 'import site; print("\n".join(site.getsitepackages()))' 2>/dev/null)
  for lib in libcudart.so.13 libcublasLt.so.13 libcublas.so.13 libnccl.so.2; do
    ldconfig -p 2>/dev/null | grep -q "$lib " && continue
    found=$(find "${roots[@]}" -maxdepth 4 -name "$lib" 2>/dev/null | head -1)
    [ -n "$found" ] && dirname "$found"
  done | sort -u | paste -sd:
}

# SRC.xz -> DST with xz, or Python's lzma where the image has no xz.
gpu_unxz() {
  if command -v xz >/dev/null; then
    xz -dc "$1" >"$2"
  else
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$1" "$2"
  fi
}

# gpu_unpack DIR DEST: DIR/lib/*.xz into DEST/lib, DIR/fallback/*.xz into DEST/fallback, DIR/data.tar.xz into
# DEST/data, DIR/prepared.tar.xz into DEST/prepared; outside the bundle, so that .gpu/ never grows by the 40 MB unpacked (it must stay small to travel).
gpu_unpack() {
  local f sub to
  for sub in lib fallback; do
    mkdir -p "$2/$sub" || return 1
    for f in "$1/$sub"/*.xz; do
      [ -e "$f" ] || continue
      to=$2/$sub/$(basename "${f%.xz}")
      if [ ! -e "$to" ]; then gpu_unxz "$f" "$to.part" && mv "$to.part" "$to" || return 1; fi
    done
  done
  for sub in data prepared; do
    if [ -e "$1/$sub.tar.xz" ] && [ ! -d "$2/$sub" ]; then
      mkdir -p "$2/$sub.part" && gpu_unxz "$1/$sub.tar.xz" "$2/$sub.tar" && tar -C "$2/$sub.part" -xf "$2/$sub.tar" &&
        rm "$2/$sub.tar" && mv "$2/$sub.part" "$2/$sub" || return 1
    fi
  done
}

# gpu_bundle_env DIR: unpacks into ${TMPDIR:-/tmp}/tinylm-gpu-<MANIFEST's hash> (exported as GPU_BUNDLE_UNPACKED)
# and exports LD_LIBRARY_PATH.
gpu_bundle_env() {
  local dir=$1 path cuda dest
  dest=${TMPDIR:-/tmp}/tinylm-gpu-$(sha256sum "$dir/MANIFEST" | cut -c1-12)
  gpu_unpack "$dir" "$dest" || { echo "gpu-env: could not unpack the libraries of $dir into $dest" >&2; return 1; }
  export GPU_BUNDLE_UNPACKED=$dest
  path=$dest/lib
  cuda=$(gpu_cuda_dirs)
  [ -n "$cuda" ] && path=$path:$cuda
  if LD_LIBRARY_PATH=$path ldd "$dir"/bin/* 2>&1 | grep -E 'lib(stdc\+\+|gomp|gcc_s)' | grep -q 'not found'; then
    path=$path:$dest/fallback
    echo "gpu-env: the system's libstdc++/libgomp/libgcc_s are missing or too old: using the bundle's copies"
  fi
  export LD_LIBRARY_PATH=$path${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  echo "gpu-env: LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
}
