"""One source of truth for how long each notebook takes: ``notebooks/timings.yaml``.

The "How long it takes" paragraph of every notebook's opening cell, the time column of
the notebook tables in ``README.md`` and ``notebooks/README.md``, and the notes under
those tables are generated from the YAML file::

    python -m benchmarks.notebook_timings          # rewrite the generated text
    python -m benchmarks.notebook_timings --check  # exit 1 if anything is out of date

``tests/test_notebook_timings.py`` runs the check, so a time changed in one place only
fails the tests. To re-measure, execute each notebook with the command in the YAML's
``how`` field and edit the YAML, then run this script.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
TIMINGS = REPO / "notebooks" / "timings.yaml"
NOTEBOOKS = REPO / "notebooks"
README = REPO / "README.md"
NB_README = NOTEBOOKS / "README.md"
HEADING = "# ## How long it takes on a laptop CPU\n"
NOTE_START, NOTE_END = "<!-- timings:start -->", "<!-- timings:end -->"


def load(path: Path | None = None) -> dict:
    """The timings file, checked for the fields the generators need."""
    path = TIMINGS if path is None else path
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    for field in ("measured_on", "machine", "how", "first_run", "notebooks"):
        if field not in data:
            raise ValueError(f"{path.name}: missing top-level field {field!r}")
    for name, nb in data["notebooks"].items():
        for field in ("reading_min", "full", "fast"):
            if field not in nb:
                raise ValueError(f"{path.name}: notebook {name} lacks {field!r}")
        for mode in ("full", "fast"):
            if "run" not in nb[mode]:
                raise ValueError(f"{path.name}: {name}.{mode} needs 'run' (the default path)")
    return data


def _wrap(text: str, first: str = "# - ", rest: str = "#   ", width: int = 92) -> list[str]:
    words, lines, line = text.split(), [], first
    for w in words:
        if len(line) + len(w) + (0 if line in (first, rest) else 1) > width and line not in (
            first,
            rest,
        ):
            lines.append(line.rstrip())
            line = rest
        line += ("" if line in (first, rest) else " ") + w
    lines.append(line.rstrip())
    return lines


def header_lines(name: str, data: dict) -> list[str]:
    """The generated body of the "How long it takes" section of notebook ``name``."""
    nb = data["notebooks"][name]
    out = _wrap(f"Reading and doing the exercises: about {nb['reading_min']} minutes.")
    for mode, label in (("full", "Full mode"), ("fast", "Fast mode (`HIHPQ_FAST=1`)")):
        m = nb[mode]
        text = f"**{label}**"
        if m.get("what"):
            text += f" ({m['what']})"
        text += f": {m['run']}"
        if m.get("train"):
            text += f"; **training it yourself** instead: {m['train']}"
        out += _wrap(text + ".")
    if nb.get("features") == "quick":
        fr = data["first_run"]["fast"]
        out += _wrap(
            f"**First run on a new machine:** this notebook always uses the quick subset, so "
            f"in both modes the frozen backbone features are computed and cached first: about "
            f"{fr['minutes']} min ({fr['what']}). The notebook prints a FIRST RUN notice when "
            f"that happens; later runs load the features in seconds."
        )
    elif nb.get("features"):
        fr = data["first_run"]
        out += _wrap(
            f"**First run on a new machine:** before any of this the frozen backbone "
            f"features are computed and cached: about {fr['full']['minutes']} min for full "
            f"mode ({fr['full']['what']}) and about {fr['fast']['minutes']} min for fast mode "
            f"({fr['fast']['what']}). The notebook prints a FIRST RUN notice when that "
            f"happens; later runs load the features in seconds."
        )
    out += _wrap(
        f"Measured {data['measured_on']} on {data['machine']}, kernel start included "
        f"({data['how']}). Generated from `notebooks/timings.yaml` by "
        f"`python -m benchmarks.notebook_timings`."
    )
    return out


def table_cell(name: str, data: dict) -> str:
    """The short ``full / fast`` entry of the README tables."""
    nb = data["notebooks"][name]
    cell = f"{nb['full']['short']} / {nb['fast']['short']}"
    fr = data["first_run"]
    if nb.get("features") == "quick":
        cell += f" (first run: + {fr['fast']['minutes']} min of features)"
    elif nb.get("features"):
        cell += f" (first run: + {fr['full']['minutes']} / {fr['fast']['minutes']} min of features)"
    return cell


def note(data: dict) -> str:
    """The paragraph under the README tables."""
    return (
        f"{NOTE_START}\nRun times: full mode / fast mode, features cached, saved runs "
        f"loaded (the notebooks' default: load the run if it exists, else train), kernel "
        f"start included; each notebook's header also gives the time to train its runs "
        f"yourself and the cost of the first run, when the backbone features are computed "
        f"(about {data['first_run']['full']['minutes']} min for full mode, "
        f"{data['first_run']['fast']['minutes']} min for fast mode). Measured "
        f"{data['measured_on']} on {data['machine']}. The single source is "
        f"[notebooks/timings.yaml](notebooks/timings.yaml); "
        f"`python -m benchmarks.notebook_timings` writes it into the headers and both "
        f"READMEs.\n{NOTE_END}"
    )


def render_notebook(text: str, name: str, data: dict) -> str:
    if HEADING not in text:
        raise ValueError(f"{name}: no '{HEADING.strip()}' heading in the opening cell")
    head, rest = text.split(HEADING, 1)
    end = rest.index("\n\n# %%")  # the end of the opening markdown cell
    return head + HEADING + "\n".join(header_lines(name, data)) + rest[end:]


def render_table(text: str, data: dict, path: Path) -> str:
    lines = text.split("\n")
    names = sorted(data["notebooks"])
    found = set()
    for i, line in enumerate(lines):
        m = re.match(r"^\| (\d\d) \|", line)
        if not m:
            continue
        match = [n for n in names if n.startswith(m.group(1) + "_")]
        if not match:
            continue
        cells = line.split(" | ")
        col = _time_column(lines, i)
        cells[col] = table_cell(match[0], data)
        lines[i] = " | ".join(cells)
        found.add(match[0])
    missing = set(names) - found
    if missing:
        raise ValueError(f"{path.name}: no table row for {sorted(missing)}")
    out = "\n".join(lines)
    if NOTE_START in out:
        a, b = out.index(NOTE_START), out.index(NOTE_END) + len(NOTE_END)
        out = out[:a] + note(data) + out[b:]
    else:
        raise ValueError(f"{path.name}: add the markers {NOTE_START} ... {NOTE_END}")
    return out


def _time_column(lines: list[str], row: int) -> int:
    """Index (in ``' | '``-split cells) of the column whose header mentions the time."""
    j = row
    while j > 0 and lines[j - 1].startswith("|"):
        j -= 1
    header = lines[j].split(" | ")
    for k, h in enumerate(header):
        if "full / fast" in h:
            return k
    raise ValueError(f"no 'full / fast' column in the table header: {lines[j]}")


def render_all(write: bool) -> list[Path]:
    """Regenerate every file; return those whose text changes (written if ``write``)."""
    data = load()
    changed = []
    targets = [(NOTEBOOKS / f"{name}.py", name) for name in sorted(data["notebooks"])]
    for path, name in targets:
        old = path.read_text(encoding="utf-8")
        new = render_notebook(old, name, data)
        if new != old:
            changed.append(path)
            if write:
                path.write_text(new, encoding="utf-8")
    for path in (README, NB_README):
        old = path.read_text(encoding="utf-8")
        new = render_table(old, data, path)
        if new != old:
            changed.append(path)
            if write:
                path.write_text(new, encoding="utf-8")
    return changed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only report files out of date")
    args = ap.parse_args(argv)
    try:
        changed = render_all(write=not args.check)
    except (ValueError, OSError, yaml.YAMLError) as err:
        print(f"notebook_timings: {err}", file=sys.stderr)
        return 2
    for path in changed:
        verb = "out of date" if args.check else "rewritten"
        print(f"{path.relative_to(REPO)}: {verb}")
    if args.check and changed:
        print("run `python -m benchmarks.notebook_timings` to regenerate", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
