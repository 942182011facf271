#!/usr/bin/env python3
"""`replay serve` with Python's default garbage-collector settings, as it ran before the tuning in
replay/cli.py (_tune_gc): the "before" side of bench/ingest_throughput.py --before-after."""
import sys

import replay.cli

replay.cli._tune_gc = lambda: None
sys.exit(replay.cli.main(sys.argv[1:]))
