#!/usr/bin/env python3
"""Check that TensorBoard itself loads selfsup's event files.

Usage:
    python benchmarks/check_tensorboard.py DIR [--expect TAG=COUNT ...] [--values FILE.json]

DIR is a folder of `events.out.tfevents.*` files as written by selfsup's
`TensorBoardWriter` (e.g. runs/<name>/tb). They are read with TensorBoard's
own `EventAccumulator` (every scalar kept: no reservoir sampling; purging of
orphaned data on, as in `tensorboard --logdir`), which checks the TFRecord
framing and CRCs and decodes the Event protobufs, and again with the plugin
reader of `tensorboard --load_fast=false`, which must see the same points. Prints every scalar tag with
its number of points, then one line starting with PASS or FAIL; exits with 1
on FAIL (a tag of --expect missing or with another count, a value of --values
that differs, or no scalar at all).

--values FILE.json holds {"tag": [[step, value], ...], ...}: the tag's points,
in step order, must be exactly these (values compared as float32, to 1e-6
relative; "nan", "inf" and "-inf" as strings stand for themselves).

Needs `tensorboard` (`pip install tensorboard` into the benchmark venv).
"""
import argparse
import json
import math
import sys


def fail(message):
    print(f"FAIL: {message}")
    sys.exit(1)


def expected_value(v):
    if isinstance(v, str):
        return float(v)  # "nan", "inf", "-inf"
    return float(v)


def same(a, b):
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= 1e-6 * max(1.0, abs(b))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dir")
    parser.add_argument("--expect", nargs="*", default=[], metavar="TAG=COUNT")
    parser.add_argument("--values", metavar="FILE.json")
    args = parser.parse_args()

    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.backend.event_processing import plugin_event_accumulator as pea
    from tensorboard.util import tensor_util

    acc = ea.EventAccumulator(
        args.dir, size_guidance={ea.SCALARS: 0}, purge_orphaned_data=True
    )
    acc.Reload()
    tags = sorted(acc.Tags().get(ea.SCALARS, []))
    points = {tag: acc.Scalars(tag) for tag in tags}

    # The reader of `tensorboard --load_fast=false` (scalars become tensors of
    # the scalars plugin) must see the same points.
    plugin = pea.EventAccumulator(
        args.dir, size_guidance={pea.TENSORS: 0}, purge_orphaned_data=True
    )
    plugin.Reload()
    plugin_tags = sorted(plugin.Tags().get(pea.TENSORS, []))
    if plugin_tags != tags:
        fail(f"the plugin reader sees tags {plugin_tags}, the scalar reader {tags}")
    for tag in tags:
        a = [(e.step, e.value) for e in points[tag]]
        b = [
            (e.step, float(tensor_util.make_ndarray(e.tensor_proto)))
            for e in plugin.Tensors(tag)
        ]
        if len(a) != len(b) or not all(
            sa == sb and same(va, vb) for (sa, va), (sb, vb) in zip(a, b)
        ):
            fail(f"tag {tag}: the plugin reader sees {b}, the scalar reader {a}")
    for tag in tags:
        print(f"{tag}: {len(points[tag])}")
    if not tags:
        fail(f"no scalars in {args.dir}")

    for item in args.expect:
        tag, sep, count = item.rpartition("=")
        if not sep or not count.isdigit():
            fail(f"--expect {item!r}: write TAG=COUNT")
        if tag not in points:
            fail(f"tag {tag} missing (have {', '.join(tags)})")
        if len(points[tag]) != int(count):
            fail(f"tag {tag} has {len(points[tag])} points, expected {count}")

    if args.values:
        with open(args.values) as f:
            want = json.load(f)
        for tag, pairs in want.items():
            if tag not in points:
                fail(f"tag {tag} missing (have {', '.join(tags)})")
            got = [(e.step, e.value) for e in sorted(points[tag], key=lambda e: e.step)]
            if len(got) != len(pairs):
                fail(f"tag {tag}: {len(got)} points {got}, expected {len(pairs)} {pairs}")
            for (step, value), (wstep, wvalue) in zip(got, pairs):
                wvalue = expected_value(wvalue)
                if step != int(wstep) or not same(value, wvalue):
                    fail(f"tag {tag}: point (step {step}, {value}), expected (step {wstep}, {wvalue})")

    print(f"PASS: {len(tags)} scalar tags, {sum(len(p) for p in points.values())} points")


if __name__ == "__main__":
    main()
