"""Class hierarchies read from files: ancestor chains, the levels a user picks, level labels.

Two file formats reach the pipeline:

* a **superclass file** (two levels, :func:`~hihpq_lib.data.sources.read_superclass_file`):
  one ``class superclass`` pair per line, or a JSON object ``{"class": "superclass"}``;
* a **hierarchy file** (any depth, :func:`read_hierarchy_file`): a JSON object mapping
  each class to its chain of ancestors, **root first**, either as a list or as an object
  with an ``"ancestors"`` list (e.g. ``wordnet_hierarchy.json``:
  ``{"n01443537": {"name": "goldfish", "ancestors": ["entity.n00001740", ...]}}``).

**Levels.** Level ``d`` of a chain is its ancestor at depth ``d`` (``0`` = the root). A
class whose chain is shorter than ``d`` is its own node at that level (the tree cut at
depth ``d``: a leaf above the cut stays a leaf), so chains of unequal depth are fine.
``levels="auto"`` (:func:`auto_levels`) keeps every depth ``d >= 1`` whose number of
distinct nodes lies between 2 and half the number of classes, thinned to at most three:
the shallowest, the deepest and the middle one.

>>> chains = {"cat": ["animal", "mammal"], "dog": ["animal", "mammal"], "car": ["thing"]}
>>> level_labels(chains, ["car", "cat", "dog"], [0, 1])
{'depth 0': (array([0, 1, 1]), ['thing', 'animal']), 'depth 1': (array([0, 1, 1]), ['car', 'mammal'])}
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "read_hierarchy_file",
    "superclass_chains",
    "auto_levels",
    "level_labels",
    "resolve_levels",
    "ClassTree",
    "class_tree",
    "example_chains",
]


def read_hierarchy_file(
    path: str | os.PathLike, class_names: Sequence[str] | None = None
) -> dict[str, list[str]]:
    """Read a class -> ancestor chain (root first) map from a JSON file.

    Each value is a list of ancestor names, or an object with an ``"ancestors"`` list
    (other keys, such as ``"name"``, are ignored). With ``class_names``, every class must
    be in the file (``ValueError`` naming the missing ones); classes of the file that are
    not in ``class_names`` are dropped (a file may cover more classes than a folder).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"hierarchy file {path} not found")
    try:
        raw = json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"hierarchy file {path} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(
            f"hierarchy file {path} must hold a JSON object class -> ancestors (root first)"
        )
    chains: dict[str, list[str]] = {}
    for cls, value in raw.items():
        chain = value.get("ancestors") if isinstance(value, dict) else value
        if not isinstance(chain, list) or not all(isinstance(a, str) and a for a in chain):
            raise ValueError(
                f"hierarchy file {path}: class {cls!r} needs a list of ancestor names (root "
                'first), or {"ancestors": [...]}; got ' + repr(value)[:80]
            )
        chains[str(cls)] = list(chain)
    if class_names is not None:
        missing = [c for c in class_names if c not in chains]
        if missing:
            shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise ValueError(
                f"hierarchy file {path} has no ancestors for {len(missing)} class(es) of the "
                f"data ({shown}); add an entry for each class folder"
            )
        chains = {c: chains[c] for c in class_names}
    return chains


def superclass_chains(superclass_of: Mapping[str, str]) -> dict[str, list[str]]:
    """A two-level map (class -> superclass) as one-ancestor chains (level 0 = superclass)."""
    return {c: [s] for c, s in superclass_of.items()}


def _node(chain: Sequence[str], cls: str, depth: int) -> str:
    return chain[depth] if depth < len(chain) else cls


def auto_levels(chains: Mapping[str, Sequence[str]]) -> list[int]:
    """The levels ``levels="auto"`` picks (see the module docstring).

    Every depth ``d >= 1`` whose number of distinct nodes lies in ``[2, C / 2]``, thinned to
    the shallowest, the middle and the deepest; if none qualifies, the depth with the most
    distinct nodes below ``C`` (a two-level file gives ``[0]``).
    """
    classes = list(chains)
    n = len(classes)
    deepest = max((len(c) for c in chains.values()), default=0)
    counts = {d: len({_node(chains[c], c, d) for c in classes}) for d in range(max(deepest, 1))}
    good = [d for d, k in counts.items() if d >= 1 and 2 <= k <= n / 2]
    if not good:
        below = [d for d, k in counts.items() if k < n and k >= 2] or [0]
        return [max(below, key=lambda d: (counts.get(d, 0), -d))]
    if len(good) <= 3:
        return good
    return [good[0], good[len(good) // 2], good[-1]]


def resolve_levels(chains: Mapping[str, Sequence[str]], levels) -> list[int]:
    """``levels`` as a sorted list of depths (``"auto"`` through :func:`auto_levels`)."""
    if levels is None or levels == "auto":
        return auto_levels(chains)
    out = sorted({int(d) for d in levels})
    if not out or out[0] < 0:
        raise ValueError(f"hierarchy_levels must be depths >= 0 (0 = the root), got {levels}")
    deepest = max((len(c) for c in chains.values()), default=0)
    too_deep = [d for d in out if d >= deepest]
    if too_deep:
        raise ValueError(
            f"hierarchy_levels {too_deep} lie below every ancestor chain (the deepest has "
            f"{deepest} ancestors, depths 0..{deepest - 1}); pick smaller depths or 'auto'"
        )
    return out


def level_labels(
    chains: Mapping[str, Sequence[str]], class_names: Sequence[str], levels: Sequence[int]
) -> dict[str, tuple[np.ndarray, list[str]]]:
    """Per level: the node index of every class and the node names.

    Returns
    -------
    dict ``"depth d"`` -> ``(class_to_node (C,) int64, node names)``; node names in the
    order of their first class.
    """
    out = {}
    for d in levels:
        nodes = [_node(chains[c], c, int(d)) for c in class_names]
        names = list(dict.fromkeys(nodes))
        pos = {s: i for i, s in enumerate(names)}
        out[f"depth {int(d)}"] = (np.array([pos[s] for s in nodes], dtype=np.int64), names)
    return out


@dataclass(frozen=True)
class ClassTree:
    """A hierarchy file's chains as one tree: every ancestor once, each class a leaf.

    Attributes
    ----------
    parent : (n,) int64, the parent of each node (``-1`` for the root); parents come
        before their children (nodes are numbered depth by depth)
    nodes : list of n names: an ancestor's name as in the file, a class's own name
    depth : (n,) int64, edges from the root
    leaves : (C,) int64, the node of each class, in the order of ``class_names``
    class_names : list of the C classes
    """

    parent: np.ndarray
    nodes: list[str]
    depth: np.ndarray
    leaves: np.ndarray
    class_names: list[str]

    @property
    def n_nodes(self) -> int:
        return len(self.nodes)


def class_tree(
    chains: Mapping[str, Sequence[str]], class_names: Sequence[str] | None = None
) -> ClassTree:
    """The tree of :func:`read_hierarchy_file`'s chains (all must share the same root).

    An ancestor is identified by its name; a class is a leaf below the last ancestor of
    its chain, even when a class and an ancestor share a name. Raises ``ValueError`` when
    the chains have different roots, or when one ancestor has two parents (the file is
    not a tree).

    >>> t = class_tree({"cat": ["animal", "mammal"], "dog": ["animal", "mammal"], "trout": ["animal"]})
    >>> t.nodes, t.parent.tolist(), t.depth.tolist(), t.leaves.tolist()
    (['animal', 'mammal', 'trout', 'cat', 'dog'], [-1, 0, 0, 1, 1], [0, 1, 1, 2, 2], [3, 4, 2])
    """
    names = list(chains) if class_names is None else list(class_names)
    if not names:
        raise ValueError("class_tree needs at least one class")
    missing = [c for c in names if c not in chains or not chains[c]]
    if missing:
        raise ValueError(
            f"class_tree: no ancestor chain for {missing[:5]}; every class needs at least its root"
        )
    roots = {chains[c][0] for c in names}
    if len(roots) != 1:
        raise ValueError(
            f"the chains have {len(roots)} different roots ({sorted(roots)[:5]}); a tree "
            "has one: prepend a common root to every chain"
        )
    # (key, name, parent key, depth): ancestors keyed by name, classes by ("class", name)
    info: dict[tuple[str, str], tuple[tuple[str, str] | None, int]] = {}
    for c in names:
        chain = list(chains[c])
        keys = [("node", a) for a in chain] + [("class", c)]
        for d, key in enumerate(keys):
            up = keys[d - 1] if d else None
            if key in info and info[key][0] != up:
                raise ValueError(
                    f"{key[1]!r} has two parents ({info[key][0][1] if info[key][0] else None!r} "
                    f"and {up[1] if up else None!r}): the chains do not form a tree"
                )
            info.setdefault(key, (up, d))
    order = sorted(info, key=lambda k: (info[k][1], k[0] == "class"))  # stable: first seen
    index = {k: i for i, k in enumerate(order)}
    parent = np.array(
        [index[info[k][0]] if info[k][0] is not None else -1 for k in order], dtype=np.int64
    )
    depth = np.array([info[k][1] for k in order], dtype=np.int64)
    leaves = np.array([index[("class", c)] for c in names], dtype=np.int64)
    return ClassTree(parent, [k[1] for k in order], depth, leaves, names)


def example_chains(branching: Sequence[int] = (4, 3, 3, 2, 2, 2, 2), seed: int = 0) -> dict:
    """A small **synthetic**, unbalanced hierarchy for when no real one is at hand.

    A tree grown level by level: a node at depth ``d`` gets up to ``branching[d]``
    children (at least one), chosen at random, and some nodes stop early, so depths vary.
    Every node is named after its path (``"n.0.2"``); leaves are the classes. Returns
    chains as :func:`read_hierarchy_file` does (class -> ancestors, root first).

    >>> chains = example_chains((2, 2), seed=0)
    >>> all(chain[0] == "n" for chain in chains.values())
    True
    """
    rng = np.random.default_rng(seed)
    chains: dict[str, list[str]] = {}

    def grow(path: list[str], depth: int) -> None:
        name = path[-1]
        stop = depth >= len(branching) or (depth >= 2 and rng.random() < 0.2)
        if stop:
            chains[name] = path[:-1]
            return
        k = int(rng.integers(1, branching[depth] + 1)) if depth else branching[0]
        for j in range(k):
            grow(path + [f"{name}.{j}"], depth + 1)

    grow(["n"], 0)
    return chains
