#!/usr/bin/env bash
# A compiler launcher that appends the CPU seconds (user + system) and the wall seconds of every translation unit
# to a file: where a whole build spends its time (docs/testing.md, "Build time").
#   cmake -S . -B build-profile -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER_LAUNCHER=$PWD/scripts/cpu-time-launcher.sh
#   TU_TIMES=/tmp/tu-times.txt cmake --build build-profile -j2
#   sort -g -r /tmp/tu-times.txt | head -20        # cpu_seconds wall_seconds object
set -uo pipefail
log=${TU_TIMES:-tu-times.txt}
object="" previous=""
for a in "$@"; do
    [[ $previous == -o ]] && object=$a
    previous=$a
done
start=$(date +%s.%N)
TIMEFORMAT="%U %S"
{ cpu=$({ time "$@" 1>&3 2>&4; } 2>&1); } 3>&1 4>&2
rc=$?
end=$(date +%s.%N)
read -r user system <<<"$cpu"
python3 -c "import sys; u, s, a, b = map(float, sys.argv[1:5]); print(f'{u + s:.1f} {b - a:.1f} {sys.argv[5]}')" \
    "$user" "$system" "$start" "$end" "$object" >>"$log"
exit $rc
