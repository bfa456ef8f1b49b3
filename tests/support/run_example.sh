#!/usr/bin/env bash
# An example's smoke test (tinylm_add_example_test, cmake/tinylm_helpers.cmake): passes only when the program
# exits with 0 and its output (stdout and stderr together) matches an extended regular expression, matched
# over the whole output (`.` crosses lines, as in ctest's PASS_REGULAR_EXPRESSION, which alone ignores the exit
# code).
# usage: run_example.sh [-s SKIP_CODE] [-d DATA_DIR] PATTERN COMMAND [ARGS...]
#   -s SKIP_CODE  the program's exit code for "my data is absent": passed through, for ctest's SKIP_RETURN_CODE
#   -d DATA_DIR   TINYLM_DATA_DIR for the program when the environment sets none
set -u
skip= data=
while getopts s:d: o; do
  case $o in
    s) skip=$OPTARG ;;
    d) data=$OPTARG ;;
    *) exit 1 ;;
  esac
done
shift $((OPTIND - 1))
if [ $# -lt 2 ]; then
  echo "usage: run_example.sh [-s SKIP_CODE] [-d DATA_DIR] PATTERN COMMAND [ARGS...]" >&2
  exit 1
fi
pattern=$1
shift
if [ -n "$data" ] && [ -z "${TINYLM_DATA_DIR:-}" ]; then export TINYLM_DATA_DIR=$data; fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
"$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
if [ -n "$skip" ] && [ "$rc" -eq "$skip" ]; then
  echo "run_example: exit code $rc: skipped (the program's data is absent)"
  exit "$rc"
fi
if [ "$rc" -ne 0 ]; then
  echo "run_example: FAILED: exit code $rc"
  exit 1
fi
if ! grep -Ezq -- "$pattern" "$log"; then
  echo "run_example: FAILED: exit code 0, but the output does not match /$pattern/"
  exit 1
fi
echo "run_example: passed (exit code 0, the output matches /$pattern/)"
