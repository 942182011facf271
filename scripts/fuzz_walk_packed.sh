#!/usr/bin/env bash
# Fuzz walk_packed (replay/privacy/_native_walk.c: masking a full snapshot on its msgpack) under
# AddressSanitizer and UBSan: the real recordings' full snapshots, packed, then bytes flipped, deleted,
# inserted (msgpack type bytes among them) or cut anywhere, or their trees changed before packing (odd
# ids, types, names and values, bin and ext among them), must be masked or refused with an error, and
# never read or write out of bounds, nor may removes, moves and re-adds against the mirror's rows after
# it. Unchanged snapshots must come out as the decoded walk masks them. The same for a mutation's adds
# walked packed after the snapshot (cut_adds, walk_packed_adds: their subtrees added under random
# parents, and their bytes changed), and for spans given in place of the walk's own (the packer's:
# here some dropped, moved or swapped).
# PYTHONMALLOC=malloc: every Python bytes object gets its own allocation, so ASan sees a read past its end.
#   scripts/fuzz_walk_packed.sh [SEED] [CASES]     (needs gcc and ./scripts/setup --test first)
set -euo pipefail
cd "$(dirname "$0")/.."
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
suffix=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
gcc -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -fPIC -shared \
  $(.venv/bin/python -c 'import sysconfig; print("-I" + sysconfig.get_paths()["include"])') \
  replay/privacy/_native_walk.c -o "$build/_native_walk$suffix"
PYTHONMALLOC=malloc ASAN_OPTIONS=detect_leaks=0 LD_PRELOAD="$(gcc -print-file-name=libasan.so)" \
  .venv/bin/python - "$build/_native_walk$suffix" "${1:-0}" "${2:-3000}" <<'PY'
import array, importlib.util, random, sys
path, seed, cases = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
# The sanitized build stands in for the installed one before the walk loads it.
spec = importlib.util.spec_from_file_location("replay.privacy._native_walk", path)
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
sys.path[:0] = ["tests"]
import msgspec
from harness import RECORDINGS, load_recording, mutated
from replay.privacy import MaskingPolicy, SessionMirror, enforce_events, walk
from replay.privacy.enforce import Enforcer, mirror_attributes

assert walk._native_walk is module and walk.native_walk_packed is not None
policy = MaskingPolicy()
rules = walk.rules_for(policy)
snapshots = [e for p in RECORDINGS for e in load_recording(p) if e.get("type") == 2]
seeds = [msgspec.msgpack.encode(e) for e in snapshots]
tokens = [b"\xc0", b"\xc2", b"\xc3", b"\xcb", b"\xcf", b"\xd3", b"\xd9", b"\xdb", b"\xdc", b"\xdd", b"\xde",
          b"\xdf", b"\xc4", b"\xc7", b"\xd4", b"\xd8", b"\x80", b"\x8f", b"\x90", b"\x9f", b"\xa0", b"\xbf",
          b"\xa2id", b"\xa4type", b"\xaachildNodes", b"\xff", b"\x7f"]
rng = random.Random(seed)
masked = refused = 0


def walker() -> walk.Walker:
    return walk.Walker(rules, SessionMirror(mirror_attributes(policy)), Enforcer(rules))


def mutate_mirror(mirror: SessionMirror) -> None:
    """Removes, moves and re-adds of random ids against the snapshot's rows (MirrorTable)."""
    for _ in range(rng.randrange(1, 12)):
        node_id = rng.randrange(0, 80)
        node, (leaf, parent) = mirror.get(node_id), mirror.leaf_parent(node_id)
        action = rng.random()
        if node is not None and action < 0.4:
            mirror.remove(node)
        elif node is not None and action < 0.6:
            mirror.children_of(node)
            mirror.add(node_id, "div", {"class": "moved"}, mirror.get(rng.randrange(0, 80)))
        elif leaf and action < 0.8:
            mirror.remove_leaf(node_id)
        else:
            mirror.add_leaf(node_id, mirror.get(rng.randrange(0, 80)))
    mirror.everything()


for event, data in zip(snapshots, seeds):  # unchanged: the same bytes as the decoded walk
    w = walker()
    expected = msgspec.msgpack.decode(data)
    enforce_events(policy, SessionMirror(mirror_attributes(policy)), [expected])
    assert w.packed_full_snapshot(data) == msgspec.msgpack.encode(expected)
odd = [True, False, None, 1.5, 2.0, -1, 2**63 + 5, -2**63, "", "é" * 3, "x" * 40, "DIV", "INPUT", "a\u00e9b",
       "jane@example.com", "https://x.test/?q=1", b"\x00bin", msgspec.msgpack.Ext(1, b"ext"), [], {}, [1, {}],
       {"id": 3}, "rr-block", "rr_width"]


def changed(tree):
    """A copy of a snapshot tree with a few of its values replaced by odd ones."""
    tree = msgspec.msgpack.decode(msgspec.msgpack.encode(tree))
    nodes, stack = [], [tree]
    while stack:
        n = stack.pop()
        if isinstance(n, dict):
            nodes.append(n)
            stack.extend(n.get("childNodes") or [])
            stack.extend(v for v in (n.get("attributes") or {}).values() if isinstance(v, dict))
    for _ in range(rng.randrange(1, 8)):
        n = rng.choice(nodes)
        key = rng.choice(["id", "type", "tagName", "attributes", "childNodes", "textContent", "rootId", "é"])
        if key == "attributes" and isinstance(n.get("attributes"), dict) and rng.random() < 0.7:
            name = rng.choice(["class", "id", "title", "href", "value", "style", "é", "x" * 40, "TITLE", "src"])
            n["attributes"][name] = rng.choice(odd)
        elif key == "id" and rng.random() < 0.3:
            n["id"] = rng.choice(nodes).get("id")  # an id used twice
        else:
            n[key] = rng.choice(odd)
    return tree


def subtrees(tree):
    out, stack = [], [tree]
    while stack:
        n = stack.pop()
        if isinstance(n, dict):
            out.append(n)
            stack.extend(c for c in (n.get("childNodes") or []) if isinstance(c, dict))
    return out


def added(w, tree):
    """A mutation adding a few of ``tree``'s subtrees under random ids, its adds walked packed."""
    adds = [rng.choice([{"parentId": rng.randrange(0, 80), "nextId": None, "node": rng.choice(subtrees(tree))},
                        rng.choice(odd)]) for _ in range(rng.randrange(1, 6))]
    event = msgspec.msgpack.encode({"type": 3, "timestamp": 1, "data": {"source": 0, "removes": [], "texts": [],
                                                                        "attributes": [], "adds": adds}})
    cut = walk.cut_adds(event if rng.random() < 0.7 else mutated(rng, event, tokens))
    if cut is not None:
        if rng.random() < 0.3:
            cut = (cut[0], walk.PackedAdds(mutated(rng, cut[1].adds, tokens), cut[1].spans))
        decoded = msgspec.msgpack.decode(cut[0])
        decoded["data"]["adds"] = cut[1]
        w.event(decoded)


def odd_spans(s):
    """The walk's own spans of ``s`` with a few dropped, moved or swapped."""
    ints = list(memoryview(module.spans_of(s)).cast("q"))
    for _ in range(rng.randrange(1, 4)):
        if len(ints) < 4:
            break
        i = rng.randrange(0, len(ints) // 2) * 2
        action = rng.random()
        if action < 0.4:
            del ints[i:i + 2]
        elif action < 0.8:
            ints[i + rng.randrange(2)] += rng.choice([-2, -1, 1, 2])
        else:
            j = rng.randrange(0, len(ints) // 2) * 2
            ints[i:i + 2], ints[j:j + 2] = ints[j:j + 2], ints[i:i + 2]
    return array.array("q", ints).tobytes()


for i in range(cases):
    if i % 2:
        event = rng.choice(snapshots)
        tree = changed(event["data"]["node"])
        s = msgspec.msgpack.encode({**event, "data": {**event["data"], "node": tree}})
        try:
            w = walker()
            w.packed_full_snapshot(s)
            mutate_mirror(w.mirror)
            added(w, tree)
            masked += 1
        except (ValueError, TypeError, AttributeError, KeyError, RecursionError, msgspec.DecodeError):
            refused += 1  # Python's own error, as the decoded walk raises on such a tree
        continue
    if i % 8 == 2:
        s = rng.choice(seeds)
        try:
            w = walker()
            module.walk_packed(w, s, w._walk_packed_subtree, odd_spans(s))
            masked += 1
        except ValueError:
            refused += 1
        continue
    s = rng.choice(seeds)
    if i % 4 == 0:
        s = s[:rng.randrange(len(s) + 1)]  # cut anywhere
    try:
        w = walker()
        w.packed_full_snapshot(mutated(rng, s, tokens))
        mutate_mirror(w.mirror)
        masked += 1
    except ValueError:
        refused += 1
    except (TypeError, AttributeError, RecursionError, msgspec.DecodeError):
        refused += 1  # a delegated node of odd types: Python's own error, as the decoded walk raises
print(f"{cases} mutated snapshots: no sanitizer report; {masked} masked, {refused} refused; "
      f"{len(seeds)} unchanged ones as the decoded walk masks them")
PY
