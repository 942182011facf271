#!/usr/bin/env python3
"""Summarise py-spy collapsed stacks (``py-spy record --format raw``): where the samples go.

    python bench/top_frames.py bench/out/ingest.txt [--top 25] [--thread MainThread]

Prints inclusive share per function (a function counted once per sample even if recursive) and
self share (the leaf frame), so a hot path shows up without opening a flame graph.
"""
import argparse
import collections

p = argparse.ArgumentParser()
p.add_argument("file")
p.add_argument("--top", type=int, default=25)
p.add_argument("--thread", help="only stacks whose thread name contains this")
args = p.parse_args()

inclusive, self_ = collections.Counter(), collections.Counter()
total = 0
for line in open(args.file):
    stack, _, count = line.rstrip().rpartition(" ")
    frames = stack.split(";")
    if args.thread and args.thread not in frames[0]:
        continue
    n = int(count)
    total += n
    # py-spy frames look like "function (file.py:line)"; drop the line so a function is one row.
    names = [f.rsplit(":", 1)[0] + ")" if ":" in f else f for f in frames[1:]]
    for name in set(names):
        inclusive[name] += n
    if names:
        self_[names[-1]] += n
print(f"{total} samples")
print("inclusive:")
for name, n in inclusive.most_common(args.top):
    print(f"  {100 * n / total:5.1f}%  {name}")
print("self:")
for name, n in self_.most_common(args.top):
    print(f"  {100 * n / total:5.1f}%  {name}")
