#!/usr/bin/env python3
"""Corpus counts behind a QA set: for each fact, how often the corpus states it (`stated`) and how often each
distractor stands in the answer's place (`stated` with the answer replaced). Case-folded substring counts over
the Tatar running text.

    python3 benchmarks/tatar_qa/count_phrases.py [benchmarks/tatar_qa/frequent_facts.jsonl] [--data ../shared/data]
"""
import argparse
import json
import pathlib

FILES = ["song_lyrics.txt", "explanatory_dictionary.txt", "bible_nt.txt", "ntrex128.tat.txt", "udhr.txt",
         "wikipedia_lines.txt"]  # as test_eval's check


def main():
    here = pathlib.Path(__file__).resolve().parent
    ap = argparse.ArgumentParser()
    ap.add_argument("set", nargs="?", default=str(here / "frequent_facts.jsonl"))
    ap.add_argument("--data", default=str(here.parents[1].parent / "shared" / "data"))
    a = ap.parse_args()
    text = "".join((pathlib.Path(a.data) / "tatar" / f).read_text(encoding="utf-8").casefold() for f in FILES)
    print(f"{'fact':28s} {'stated':>7s}  distractors in the answer's place")
    for line in open(a.set, encoding="utf-8"):
        f = json.loads(line)
        stated = f.get("stated", "")
        if not stated:
            continue
        n = text.count(stated.casefold())
        alt = {d: text.count(stated.casefold().replace(f["answer"].casefold(), d.casefold(), 1))
               for d in f["distractors"]}
        print(f"{f['id']:28s} {n:7d}  " + ", ".join(f"{d} {c}" for d, c in alt.items()))


if __name__ == "__main__":
    main()
