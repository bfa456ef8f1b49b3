#!/bin/sh
# A rank killed with SIGKILL mid-run ends the whole job, non-zero, within 60 s and with a message naming the
# failure; the job started again resumes from the last complete checkpoint and finishes
# (test_data_parallel.cpp, resume_after_a_rank_died).
#   kill_one_rank.sh MPIEXEC TEST_DIST WORK_DIR
set -u
mpiexec=$1 exe=$2 work=$3
rm -rf "$work" && mkdir -p "$work"
start=$(date +%s)
TINYLM_DIST_KILL_DIR="$work" TINYLM_DIST_KILL_RANK=1 timeout 120 "$mpiexec" -np 2 "$exe" \
  --run_test=data_parallel/resume_after_a_rank_died --log_level=message >"$work/killed.log" 2>&1
rc=$?
elapsed=$(($(date +%s) - start))
cat "$work/killed.log"
echo "kill_one_rank: the job with rank 1 killed exited with $rc after ${elapsed} s"
[ "$rc" -ne 0 ] || { echo "kill_one_rank: FAIL: it exited 0"; exit 1; }
[ "$rc" -ne 124 ] && [ "$elapsed" -le 60 ] || { echo "kill_one_rank: FAIL: not ended within 60 s"; exit 1; }
grep -qE "rank 1 .*(signal 9|Killed)" "$work/killed.log" || { echo "kill_one_rank: FAIL: no message names rank 1's death"; exit 1; }
[ -f "$work/checkpoint/trainer_state.json" ] || [ -f "$work/checkpoint.old/trainer_state.json" ] ||
  { echo "kill_one_rank: FAIL: no complete checkpoint left"; exit 1; }
TINYLM_DIST_KILL_DIR="$work" timeout 120 "$mpiexec" -np 2 "$exe" --run_test=data_parallel/resume_after_a_rank_died \
  --log_level=message || { echo "kill_one_rank: FAIL: the restarted job did not finish"; exit 1; }
echo "kill_one_rank: passed"
rm -rf "$work"
