#!/usr/bin/env bash
# Runs PROGRAM ARGS... (a recipe with --precision bf16), passing its output and exit code through, but exits 2
# (ctest's SKIP_RETURN_CODE of the example tests) where it refused bf16 because the CPU has no fast bf16 products
# (neither AVX-512 BF16 nor AMX: examples/common/options.hpp, checked_precision).
#   bf16_or_skip.sh PROGRAM ARGS...
set -u
out=$("$@" 2>&1)
rc=$?
printf '%s\n' "$out"
if [ "$rc" -ne 0 ] && grep -q 'neither AVX-512 BF16 nor AMX' <<<"$out"; then
  echo "bf16_or_skip: skipped: this CPU has no fast bf16 products"
  exit 2
fi
exit "$rc"
