#!/usr/bin/env bash
# tests/reliability/bad_input.sh: runs every row of the table in docs/reliability.md and checks each program's
# exit code and message. The table is the specification: a row is a case, a command, the message (one line of
# the program's output must contain it; "…" stands for a part that varies, such as this machine's memory) and
# the exit code. Rows run in order (a row may continue what an earlier one left, such as a run after a full disk).
#
#   bad_input.sh SOURCE_DIR NAME=PROGRAM...     (ctest reliability_bad_input passes the built programs)
#
# Placeholders in commands and messages: $W (a scratch folder), $SRC (the source tree) and the fixtures made below:
#   $W/model     a random tiny Llama checkpoint (tokenizer.json of 500 + 3 tokens, vocabulary 503)
#   $W/notok     the same without tokenizer.json           $W/othertok   with another model's tokenizer.json (649)
#   $W/badconfig config.json says vocabulary 600           $W/truncated  model.safetensors cut to half
#   $W/model.gguf $W/model exported in q8_0                 $W/cut.gguf   its first 2,000 bytes
#   $W/run       01_train_tiny after 2 steps (checkpoint every step); $W/flip, $W/nan, $W/old, $W/pos, $W/negpos,
#                $W/bigstep, $W/typestep, $W/typelog, $W/disk are copies of it, damaged as their names say
#                (see make_fixtures)
#   $W/junk.bin  binary junk (an ELF-like header repeated); $W/empty.txt, $W/blank.txt; $W/empty_task.jsonl;
#                $W/emptydir; $W/afile (a file where a folder is expected)
# Commands may use full_disk KB PROGRAM ARGS...: the program with its files limited to KB kilobytes
# (RLIMIT_FSIZE, SIGXFSZ ignored, so a write past it fails with EFBIG as on a full disk).
set -u
src=$(cd "$1" && pwd)
shift
W=$(mktemp -d "${TMPDIR:-/tmp}/tinylm-reliability.XXXXXX")
trap 'rm -rf "$W"' EXIT
mkdir -p "$W/bin"
for spec in "$@"; do # NAME=PROGRAM: the table's commands call programs by name
    ln -s "${spec#*=}" "$W/bin/${spec%%=*}"
done
export PATH="$W/bin:$PATH"
export TINYLM_DATA_DIR="$W/emptydir" # no program finds the shared data unless a row says where it is
SRC=$src

full_disk() {
    local kb=$1
    shift
    (
        trap '' XFSZ
        ulimit -f "$kb"
        exec "$@"
    )
}

# Writes `bytes` (printf escapes) at `offset` of `file` in place.
poke() { printf "$3" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none; }

make_fixtures() {
    mkdir -p "$W/emptydir"
    : >"$W/empty.txt"
    printf '\n\n   \n' >"$W/blank.txt"
    : >"$W/empty_task.jsonl"
    : >"$W/afile"
    for _ in $(seq 500); do printf '\177ELF\002\001\001\000\377\376'; done >"$W/junk.bin"

    local tok=$src/tests/reference/tokenizer/trained_byte_level.json
    random_checkpoint --preset tiny --vocab 503 --tokenizer "$tok" --out "$W/model" >/dev/null || return 1
    cp -r "$W/model" "$W/notok" && rm "$W/notok/tokenizer.json"
    cp -r "$W/model" "$W/othertok" && cp "$src/tests/reference/tokenizer/trained_byte_fallback.json" \
        "$W/othertok/tokenizer.json"
    cp -r "$W/model" "$W/badconfig" && sed -i 's/"vocab_size": 503/"vocab_size": 600/' "$W/badconfig/config.json"
    grep -q '"vocab_size": 600' "$W/badconfig/config.json" || return 1
    cp -r "$W/model" "$W/truncated"
    truncate -s $(($(stat -c %s "$W/model/model.safetensors") / 2)) "$W/truncated/model.safetensors"
    tinylm export-gguf --model "$W/model" --type q8_0 --out "$W/model.gguf" 2>/dev/null || return 1
    head -c 2000 "$W/model.gguf" >"$W/cut.gguf"

    # A training run with a checkpoint, and copies of it damaged in one way each.
    01_train_tiny --text "$src/README.md" --steps 2 --checkpoint-every 1 --out "$W/run" >/dev/null || return 1
    local c=checkpoint
    for d in flip nan old pos negpos bigstep typestep typelog disk; do cp -r "$W/run" "$W/$d"; done
    local m=$c/model.safetensors
    poke "$W/flip/$m" $(($(stat -c %s "$W/flip/$m") - 100)) '\125' # one byte of the last tensor
    # NaN as the first float of the data (after the 8-byte length and the JSON header), in a checkpoint without
    # checksums (an older one), so that only the finiteness check can catch it.
    local header
    header=$(od -An -tu8 -N8 "$W/nan/$m" | tr -d ' ')
    poke "$W/nan/$m" $((8 + header)) '\000\000\300\177'
    sed -i '/^  "checksums": {/,/^  },/d' "$W/nan/$c/trainer_state.json" "$W/old/$c/trainer_state.json"
    sed -i 's/"data_position": [0-9]*/"data_position": 99999/' "$W/pos/$c/trainer_state.json"
    sed -i 's/"data_position": [0-9]*/"data_position": -5/' "$W/negpos/$c/trainer_state.json"
    sed -i 's/"step": [0-9]*/"step": 9223372036854775806/' "$W/bigstep/$c/trainer_state.json"
    sed -i 's/"step": [0-9]*/"step": "2"/' "$W/typestep/$c/trainer_state.json"
    sed -i '1s/"step":1/"step":"one"/' "$W/typelog/log.jsonl"
    grep -q '"data_position": 99999' "$W/pos/$c/trainer_state.json" || return 1
    grep -q '"step":"one"' "$W/typelog/log.jsonl" || return 1
    ! grep -q checksums "$W/old/$c/trainer_state.json" || return 1
}

if ! make_fixtures; then
    echo "FAILED: the fixtures could not be made"
    exit 1
fi

# Does one line of `output` contain `message`, its "…"-separated parts in this order?
contains() {
    local line rest part ok
    local -a parts
    IFS=$'\x1f' read -ra parts <<<"${2//…/$'\x1f'}"
    while IFS= read -r line; do
        rest=$line
        ok=1
        for part in "${parts[@]}"; do
            if [[ $rest == *"$part"* ]]; then
                rest=${rest#*"$part"}
            else
                ok=0
                break
            fi
        done
        ((ok)) && return 0
    done <<<"$1"
    return 1
}

table=$src/docs/reliability.md
rows=0
failed=0
while IFS= read -r line; do
    [[ $line == "| "[0-9]* ]] || continue
    IFS='|' read -r _ num what cmd msg code _ <<<"$line"
    cmd=$(sed -E 's/^ *`(.*)` *$/\1/' <<<"$cmd")
    msg=$(sed -E 's/^ *`(.*)` *$/\1/' <<<"$msg")
    code=$(tr -d ' ' <<<"$code")
    num=$(tr -d ' ' <<<"$num")
    what=$(sed -E 's/^ *//; s/ *$//' <<<"$what")
    msg=${msg//'$W'/$W}
    msg=${msg//'$SRC'/$SRC}
    rows=$((rows + 1))
    out=$(cd "$W" && eval "$cmd" 2>&1 </dev/null)
    rc=$?
    if [[ $rc != "$code" ]] || ! contains "$out" "$msg"; then
        failed=$((failed + 1))
        echo "FAILED row $num ($what): $cmd"
        echo "  expected exit $code and a line with: $msg"
        echo "  got exit $rc and:"
        tail -n 8 <<<"$out" | LC_ALL=C tr -c '[:print:]\n' '?' | sed 's/^/    /'
    else
        echo "ok row $num ($what): exit $rc"
    fi
done <"$table"

echo "$rows rows, $failed failed"
((rows > 0 && failed == 0))
