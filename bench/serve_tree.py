"""`replay serve` from another checkout of the repository: the "before" side of a before/after run.

    python bench/serve_tree.py TREE serve ...      (TREE: e.g. made by `git worktree add /tmp/base HEAD~3`)

Benchmarks pass it as their server launcher (`--before-tree TREE`), so that the code before a change
and after it are measured in the same run, on the same machine load.
"""
import sys

tree = sys.argv.pop(1)
sys.path.insert(0, tree)
import replay.cli  # noqa: E402

assert replay.cli.__file__.startswith(tree), f"replay imported from {replay.cli.__file__}, not {tree}"
sys.exit(replay.cli.main(sys.argv[1:]))
