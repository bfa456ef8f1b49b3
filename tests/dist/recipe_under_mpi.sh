#!/usr/bin/env bash
# A recipe run unchanged as 2 ranks (docs/distributed.md): `mpiexec -np 1 PROGRAM ARGS : -np 1 strace ... PROGRAM
# ARGS` (one MPI job, rank 1 under strace). It passes when the job exits with 0, its output matches PATTERN, every
# file of FILES exists, and rank 1 wrote nothing: no file created, opened for writing, renamed or removed in WORK
# (the run's folder and both ranks' working directory), under a relative path, or anywhere outside /dev, /proc,
# /sys and the temporary folders (where MPI keeps its session files and shared memory).
#   recipe_under_mpi.sh [-d DATA_DIR] [-s SKIP_CODE] [-c REFERENCE_LOG:LOG] MPIEXEC WORK PATTERN "FILE..." PROGRAM
#                       [ARGS...]
# -c: the validation losses of LOG (the run's log.jsonl, relative to WORK) must equal those of REFERENCE_LOG (one
# process's run of the same global batch) within 1e-5 relative, step by step.
# FILES are relative to WORK; so is the run: pass --out under WORK. Exit code 77 (skipped) without a working strace
# (scripts/install-deps.sh installs it) and when the program exits with SKIP_CODE ("my data is absent").
set -u
data= skip= compare=
while getopts d:s:c: o; do
  case $o in
    d) data=$OPTARG ;;
    s) skip=$OPTARG ;;
    c) compare=$OPTARG ;;
    *) exit 1 ;;
  esac
done
shift $((OPTIND - 1))
if [ $# -lt 5 ]; then
  echo "usage: recipe_under_mpi.sh [-d DATA_DIR] [-s SKIP_CODE] MPIEXEC WORK PATTERN \"FILE...\" PROGRAM [ARGS...]" >&2
  exit 1
fi
mpiexec=$1 work=$2 pattern=$3 files=$4
shift 4
if [ -n "$data" ] && [ -z "${TINYLM_DATA_DIR:-}" ]; then export TINYLM_DATA_DIR=$data; fi
if ! command -v strace >/dev/null; then
  echo "recipe_under_mpi: SKIPPED: no strace (apt-get install strace), which watches what rank 1 writes"
  exit 77
fi
if ! strace -f -qq -o /dev/null true 2>/dev/null; then
  echo "recipe_under_mpi: SKIPPED: strace cannot trace here (ptrace not permitted)"
  exit 77
fi

rm -rf "$work" && mkdir -p "$work" && cd "$work" || exit 1
log=$work/output.log trace=$work/rank1.strace
calls=open,openat,openat2,creat,mkdir,mkdirat,rename,renameat,renameat2,unlink,unlinkat,rmdir,truncate,link,linkat
calls=$calls,symlink,symlinkat
"$mpiexec" -np 1 "$@" : -np 1 strace -f -qq -y -o "$trace" -e trace="$calls" "$@" >"$log" 2>&1
rc=$?
cat "$log"
if [ -n "$skip" ] && [ "$rc" -eq "$skip" ]; then
  echo "recipe_under_mpi: exit code $rc: skipped (the program's data is absent)"
  exit 77
fi
[ "$rc" -eq 0 ] || { echo "recipe_under_mpi: FAILED: the job exited with $rc"; exit 1; }
grep -Ezq -- "$pattern" "$log" || { echo "recipe_under_mpi: FAILED: the output does not match /$pattern/"; exit 1; }
for f in $files; do
  [ -s "$work/$f" ] || { echo "recipe_under_mpi: FAILED: rank 0 did not write $f"; exit 1; }
done

if [ -n "$compare" ]; then
  reference=${compare%%:*} mine=$work/${compare#*:}
  bash "$(dirname "$0")/../support/same_losses.sh" 1e-5 "$reference" "$mine" val_loss ||
    { echo "recipe_under_mpi: FAILED: 2 ranks differ from one process"; exit 1; }
fi

# Rank 1's calls that write (open for writing, create, rename, remove), the working directory's annotation dropped
# (-y prints AT_FDCWD</path>): what remains names the file itself.
opens='(open|openat|openat2|creat)\(.*(O_WRONLY|O_RDWR|O_CREAT|O_TRUNC)'
changes='(mkdir|mkdirat|rename|renameat|renameat2|unlink|unlinkat|rmdir|truncate|link|linkat|symlink|symlinkat)\('
writes=$(sed -E 's/AT_FDCWD<[^>]*>/AT_FDCWD/g' "$trace" | grep -E "^[0-9]+ +($opens|$changes)")
[ -n "$writes" ] || [ -s "$trace" ] || { echo "recipe_under_mpi: FAILED: no trace of rank 1"; exit 1; }
allowed='/(dev|proc|sys|tmp|var/tmp)(/|"|>)'
[ -n "${TMPDIR:-}" ] && allowed="$allowed|^[0-9]+ +[a-z0-9]+\\((AT_FDCWD, )?\"${TMPDIR}"
bad=$(printf '%s\n' "$writes" | grep -F -- "$work"
      printf '%s\n' "$writes" | grep -E '(AT_FDCWD, |^[0-9]+ +[a-z0-9]+\()"[^/]'
      printf '%s\n' "$writes" | grep -vE -- "$allowed" | grep -v '^$')
if [ -n "$bad" ]; then
  echo "recipe_under_mpi: FAILED: rank 1 wrote (strace):"
  printf '%s\n' "$bad" | sort -u | head -20
  exit 1
fi
count=$(printf '%s\n' "$writes" | grep -c .)
echo "recipe_under_mpi: passed: rank 0 wrote $files; rank 1 wrote nothing (its $count writing calls all went to" \
  "/dev, /proc, /sys or temporary folders)"
