#!/usr/bin/env python3
"""Read tinylm's TensorBoard event files back with TensorBoard's own code.

tinylm writes event files with its own writer (include/tinylm/train/tensorboard.hpp). This script checks
them with the `tensorboard` package (no TensorFlow needed):

1. every record through TensorBoard's TFRecord reader, which verifies both masked CRC-32C checksums
   (a checksum error raises here, where the event loader would silently stop at that record);
2. every Event through `event_file_loader.EventFileLoader`: the first one is file_version "brain.Event:2",
   and the loader yields as many events as there are records;
3. scalars and text through `event_accumulator.EventAccumulator`: every (step, value) of every tag equals
   the expected one (values exactly, as float32), text tags carry the text plugin's metadata and decode to
   the expected UTF-8 string; wall times lie in the expected interval;
4. the same through `plugin_event_accumulator.EventAccumulator`, which TensorBoard's server uses: after its
   data_compat migration the scalar tags belong to the "scalars" plugin and the text tags to the "text"
   plugin, and the text plugin renders every text to HTML.

Usage:  python read_tensorboard.py --logdir DIR --expected expected.json
expected.json (written by `test_logging --run_test=tensorboard/reference_files`):
  {"scalars": {tag: [[step, value], ...]}, "texts": {tag: [[step, text], ...]},
   "wall_time_min": t0, "wall_time_max": t1, "event_file": name}
Exit status 0 when everything matches; otherwise every mismatch is printed and the status is 1.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import struct
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", required=True)
    parser.add_argument("--expected", required=True)
    args = parser.parse_args()

    import tensorboard
    from tensorboard.backend.event_processing import event_accumulator, event_file_loader
    from tensorboard.backend.event_processing import plugin_event_accumulator
    from tensorboard.compat.proto import event_pb2
    from tensorboard.plugins.text import text_plugin
    from tensorboard.util import tensor_util

    with open(args.expected, encoding="utf-8") as f:
        expected = json.load(f)
    errors: list[str] = []

    def expect(condition: bool, message: str) -> None:
        if not condition:
            errors.append(message)

    files = sorted(glob.glob(os.path.join(args.logdir, "*tfevents*")))
    expect(len(files) == 1, f"expected one event file in {args.logdir}, found {files}")
    if not files:
        return report(errors)
    path = files[0]
    expect(os.path.basename(path) == expected["event_file"], f"event file {path} is not {expected['event_file']}")

    # 1. Raw records: TensorBoard's record reader checks both CRCs and raises DataLossError on a mismatch.
    records = list(event_file_loader._make_tf_record_iterator(path))
    size = os.path.getsize(path)
    expect(sum(12 + len(r) + 4 for r in records) == size, f"{path}: records do not cover the file ({size} bytes)")
    first = event_pb2.Event.FromString(records[0])
    expect(first.file_version == "brain.Event:2", f"first event has file_version {first.file_version!r}")

    # 2. The event loader sees every record.
    events = list(event_file_loader.EventFileLoader(path).Load())
    expect(len(events) == len(records), f"EventFileLoader read {len(events)} events of {len(records)} records")
    t0, t1 = expected["wall_time_min"], expected["wall_time_max"]
    for e in events:
        expect(t0 <= e.wall_time <= t1, f"wall_time {e.wall_time} outside [{t0}, {t1}] (step {e.step})")

    # 3. The classic accumulator: scalars from simple_value, text as DT_STRING tensors.
    acc = event_accumulator.EventAccumulator(
        args.logdir, size_guidance={event_accumulator.SCALARS: 0, event_accumulator.TENSORS: 0}
    )
    acc.Reload()
    tags = acc.Tags()
    expect(
        sorted(tags["scalars"]) == sorted(expected["scalars"]),
        f"scalar tags {sorted(tags['scalars'])} != {sorted(expected['scalars'])}",
    )
    expect(
        sorted(tags["tensors"]) == sorted(expected["texts"]),
        f"tensor tags {sorted(tags['tensors'])} != {sorted(expected['texts'])}",
    )
    n_scalars = n_texts = 0
    for tag, points in expected["scalars"].items():
        got = [(s.step, s.value) for s in acc.Scalars(tag)] if tag in tags["scalars"] else []
        want = [(int(step), float(value)) for step, value in points]
        # Exact: the expected values are the float32 values the writer stored, as doubles.
        want32 = [(step, struct.unpack("<f", struct.pack("<f", value))[0]) for step, value in want]
        expect(got == want32, f"scalar {tag}: got {got[:5]}... ({len(got)}), expected {want32[:5]}... ({len(want)})")
        n_scalars += len(got)
    for tag, items in expected["texts"].items():
        meta = acc.SummaryMetadata(tag) if tag in tags["tensors"] else None
        expect(meta is not None and meta.plugin_data.plugin_name == "text", f"text {tag}: metadata {meta}")
        got = []
        for t in acc.Tensors(tag) if tag in tags["tensors"] else []:
            array = tensor_util.make_ndarray(t.tensor_proto)
            expect(array.shape == (), f"text {tag} step {t.step}: shape {array.shape}, expected a scalar")
            got.append((t.step, array.item().decode("utf-8")))
        want = [(int(step), text) for step, text in items]
        expect(got == want, f"text {tag}: got {got}, expected {want}")
        n_texts += len(got)

    # 4. The accumulator behind TensorBoard's server, with its data_compat migration and plugin routing.
    pacc = plugin_event_accumulator.EventAccumulator(args.logdir, size_guidance={plugin_event_accumulator.TENSORS: 0})
    pacc.Reload()
    scalar_tags = sorted(pacc.PluginTagToContent("scalars")) if "scalars" in pacc.ActivePlugins() else []
    text_tags = sorted(pacc.PluginTagToContent("text")) if "text" in pacc.ActivePlugins() else []
    expect(scalar_tags == sorted(expected["scalars"]), f"scalars plugin tags {scalar_tags}")
    expect(text_tags == sorted(expected["texts"]), f"text plugin tags {text_tags}")
    for tag, points in expected["scalars"].items():
        if tag not in scalar_tags:
            continue
        got = [(t.step, float(tensor_util.make_ndarray(t.tensor_proto))) for t in pacc.Tensors(tag)]
        want = [(int(s), struct.unpack("<f", struct.pack("<f", float(v)))[0]) for s, v in points]
        expect(got == want, f"scalars plugin {tag}: got {got[:5]}..., expected {want[:5]}...")
    for tag, items in expected["texts"].items():
        if tag not in text_tags:
            continue
        for t, (_, text) in zip(pacc.Tensors(tag), items):
            html = text_plugin.text_array_to_html(tensor_util.make_ndarray(t.tensor_proto), enable_markdown=True)
            expect(isinstance(html, str) and html != "", f"text plugin rendered {tag} step {t.step} as {html!r}")

    print(
        f"tensorboard {tensorboard.__version__}: {path}: {len(records)} records, {n_scalars} scalars in "
        f"{len(expected['scalars'])} tags, {n_texts} texts in {len(expected['texts'])} tags"
    )
    return report(errors)


def report(errors: list[str]) -> int:
    for e in errors:
        print("MISMATCH:", e, file=sys.stderr)
    print("OK" if not errors else f"FAILED: {len(errors)} mismatches")
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
