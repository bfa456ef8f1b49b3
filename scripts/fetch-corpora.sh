#!/usr/bin/env bash
# Fetches the public corpora of docs/data.md into a data directory, for machines without ../shared/data, and
# checks them against scripts/corpora.sha256. Tests never need it (they skip without data).
#
#   scripts/fetch-corpora.sh [--dest DIR] [--only novels|leipzig] [--dry-run]
#
#   novels   github.com/JoannaBy/RussianNovels at commit 0398a127, folder corpus/ -> DIR/russian_novels/corpus
#            (the 04_russian_novels corpus); every file with a recorded checksum must match.
#   leipzig  the Leipzig Corpora Collection's Tatar archives named in $TINYLM_LEIPZIG_TATAR (space-separated,
#            as on the download page of wortschatz.uni-leipzig.de; CC BY) -> DIR/tatar/leipzig/NAME/, plus
#            NAME.txt with one sentence a line (the *-sentences.txt file without its id column). An archive with
#            a recorded checksum must match; one without gets its sha256 printed, to be recorded.
#
# DIR defaults to $TINYLM_DATA_DIR, else ./data; point TINYLM_DATA_DIR (or --data-dir) at it afterwards.
# TINYLM_NOVELS_URL and TINYLM_LEIPZIG_BASE replace the download addresses (a mirror, or file:// for a check).
# Needs curl, tar and sha256sum. A mismatch stops the script with status 1 and removes nothing it did not write.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
sums="$here/corpora.sha256"
dest=${TINYLM_DATA_DIR:-data}
only=""
dry=0
novels_commit=0398a127
novels_url=${TINYLM_NOVELS_URL:-https://github.com/JoannaBy/RussianNovels/archive/${novels_commit}.tar.gz}
leipzig_base=${TINYLM_LEIPZIG_BASE:-https://downloads.wortschatz-leipzig.de/corpora}
leipzig_names=${TINYLM_LEIPZIG_TATAR:-tat_wikipedia_2021_100K}

while [ $# -gt 0 ]; do
    case "$1" in
        --dest) dest=$2; shift 2 ;;
        --only) only=$2; shift 2 ;;
        --dry-run) dry=1; shift ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "fetch-corpora: unknown argument $1 (--help)" >&2; exit 2 ;;
    esac
done
case "$only" in ""|novels|leipzig) ;; *) echo "fetch-corpora: --only takes novels or leipzig" >&2; exit 2 ;; esac

# The recorded sha256 of a path relative to the data directory ("" when none is recorded).
# Lines are "SHA256  PATH" (PATH may hold spaces: it is everything after the two spaces).
recorded() { awk -v p="$1" '$1 !~ /^#/ && substr($0, 67) == p { print $1 }' "$sums"; }

fetch() { # url file
    if [ "$dry" = 1 ]; then echo "would fetch $1"; return 0; fi
    echo "fetching $1"
    curl -fsSL --retry 3 --connect-timeout 30 -o "$2" "$1"
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0

if [ -z "$only" ] || [ "$only" = novels ]; then
    out="$dest/russian_novels/corpus"
    fetch "$novels_url" "$tmp/novels.tar.gz"
    if [ "$dry" = 0 ]; then
        mkdir -p "$tmp/novels" "$out"
        tar -xzf "$tmp/novels.tar.gz" -C "$tmp/novels"
        src=$(find "$tmp/novels" -mindepth 2 -maxdepth 2 -type d -name corpus | head -n 1)
        [ -n "$src" ] || { echo "fetch-corpora: the archive has no corpus/ folder" >&2; exit 1; }
        ok=0 bad=0 unknown=0
        for f in "$src"/*.txt; do
            name=$(basename "$f")
            want=$(recorded "russian_novels/corpus/$name")
            got=$(sha256sum "$f" | cut -d' ' -f1)
            if [ -z "$want" ]; then
                unknown=$((unknown + 1)); echo "  $name: no recorded checksum (sha256 $got)"
            elif [ "$want" != "$got" ]; then
                bad=$((bad + 1)); echo "  $name: sha256 $got, expected $want" >&2; continue
            else
                ok=$((ok + 1))
            fi
            cp "$f" "$out/$name"
        done
        missing=$(awk '$1 !~ /^#/ && substr($0, 67) ~ /^russian_novels\/corpus\// { print substr($0, 89) }' "$sums" |
            while read -r n; do [ -f "$src/$n" ] || echo "$n"; done | wc -l)
        echo "novels: $ok files verified, $unknown without a checksum, $bad mismatched, $missing recorded but absent -> $out"
        [ "$bad" = 0 ] && [ "$missing" = 0 ] || status=1
    fi
fi

if [ -z "$only" ] || [ "$only" = leipzig ]; then
    for name in $leipzig_names; do
        fetch "$leipzig_base/$name.tar.gz" "$tmp/$name.tar.gz"
        [ "$dry" = 1 ] && continue
        want=$(recorded "leipzig/$name.tar.gz")
        got=$(sha256sum "$tmp/$name.tar.gz" | cut -d' ' -f1)
        if [ -z "$want" ]; then
            echo "  $name.tar.gz: no recorded checksum; to record it: echo '$got  leipzig/$name.tar.gz' >> $sums"
        elif [ "$want" != "$got" ]; then
            echo "  $name.tar.gz: sha256 $got, expected $want" >&2
            status=1
            continue
        fi
        out="$dest/tatar/leipzig"
        mkdir -p "$out"
        tar -xzf "$tmp/$name.tar.gz" -C "$out"
        sentences=$(find "$out" -name "${name}-sentences.txt" | head -n 1)
        if [ -n "$sentences" ]; then
            cut -f2- "$sentences" > "$out/$name.txt"
            echo "leipzig: $name: $(wc -l < "$out/$name.txt") sentences -> $out/$name.txt"
        else
            echo "leipzig: $name: extracted to $out (no ${name}-sentences.txt found)"
        fi
    done
fi
exit $status
