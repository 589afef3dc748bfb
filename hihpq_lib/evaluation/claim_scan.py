"""The scanner of notebook prose: sentences about a run that are neither generated nor checked.

Conventions, "Notebooks" rule 7 (issue 27): a markdown sentence that states a number
with a decimal point or a percent, a direction ("rises", "drops") or a comparison
("beats", "the same", "differ", "most") about what a cell computed must be written by
:func:`hihpq_lib.evaluation.claims.say` or followed by a
:func:`hihpq_lib.evaluation.claims.check` that names it. :func:`scan_notebook` lists the
sentences that are neither; ``tests/test_claims_scan.py`` runs it on every notebook with
the allow-list ``notebooks/claims_allowlist.yaml`` (:func:`load_allowlist`), which keeps
the true exceptions (definitions, the paper, reasoning), each with its reason. The names
are re-exported by :mod:`hihpq_lib.evaluation.claims`.

>>> claim_words("The loss drops to 0.42.")
['drops', '0.42']
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Finding",
    "Allowance",
    "notebook_cells",
    "split_sentences",
    "claim_words",
    "names",
    "scan_notebook",
    "load_allowlist",
    "unused_allowances",
]


#: A number that reports a measurement: a decimal point (``0.93``) or a percent (``12%``).
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?\s?%|(?<![\w.])[-+−]?\d+\.\d+(?![\w.]*\d)")
#: Words that state a direction, a comparison or a conclusion about a result.
_BE = r"(?:is|are|was|were|be|stay(?:s|ed)?|remain(?:s|ed)?|look(?:s|ed)?|end(?:s|ed)?\s+up)"
_WORDS = re.compile(
    r"\b(?:"
    # directions
    r"ris(?:e|es|ing)|rose|risen|fall(?:s|ing|en)?|fell|drop(?:s|ped|ping)?|"
    r"climb(?:s|ed|ing)?|jump(?:s|ed)?|grow(?:s|ing|n)?|grew|shrink(?:s|ing)?|shr[au]nk|"
    r"increas(?:e|es|ed|ing)|decreas(?:e|es|ed|ing)|improv(?:e|es|ed|ing)|worsen(?:s|ed)?|"
    r"doubl(?:es|ed|ing)|halv(?:es|ed|ing)|"
    # comparisons
    r"beat(?:s|en)?|outperform(?:s|ed)?|wins?|won|loses|lost|"
    r"higher|lower|better|worse|best|worst|larger|smaller|bigger|greater|fewer|"
    r"more\s+than|less\s+than|(?<!at\s)most|(?<!at\s)least(?!\s+squares)|twice|"
    r"\d+\s+times|several\s+times|"
    r"differ(?:s|ed|ently)?|" + _BE + r"\s+(?:\w+\s+)?(?:different|identical|equal)|"
    r"identically|(?:almost|nearly|roughly|essentially|exactly)\s+(?:the\s+same|equal)|"
    r"\w+(?<!the)\s+the\s+same\s+(?:way|direction|sign)|the\s+same\s+as|"
    + _BE
    + r"\s+(?:\w+\s+)?the\s+same"
    r")\b",
    re.I,
)
#: Words that announce a conclusion about the run (not counted inside a say template).
_CONCLUSION = re.compile(r"\b(?:this\s+run|these\s+runs|shows\s+that|we\s+see)\b", re.I)
#: The opening and the summary restate the lesson: any check of the notebook may name them.
_OVERVIEW = re.compile(r"^#+\s*(?:summary|what you will learn|what you learned)\b", re.I | re.M)
_ABBREVIATIONS = ("e.g.", "i.e.", "et al.", "vs.", "cf.", "Fig.", "Eq.", "resp.", "approx.")
_STOP = frozenset(
    "the a an and or of to in on at by for with from as is are was were be been it its "
    "this that these those than then there their they them not no but so if when while "
    "each every all any both into over under than which who whose what how why can could "
    "does do did has have had more most less very far much many our we you your one two".split()
)


@dataclass(frozen=True)
class Finding:
    """A sentence that states something about a run without being generated or checked.

    ``cell`` is the cell's index in the notebook (0-based, as in the ``.ipynb`` that
    jupytext writes), ``kind`` is ``"markdown"`` or ``"say"`` (literal text inside a
    :func:`say` template), ``words`` are what made it a claim.
    """

    notebook: str
    cell: int
    sentence: str
    words: tuple[str, ...]
    kind: str = "markdown"

    def __str__(self) -> str:
        return f"{self.notebook}:{self.cell}: {self.sentence}  [{', '.join(self.words)}]"


@dataclass(frozen=True)
class Allowance:
    """One allow-list entry: a sentence (its start is enough) that stays prose, and why."""

    notebook: str
    sentence: str
    reason: str

    def matches(self, finding: Finding) -> bool:
        return finding.notebook == self.notebook and _norm(finding.sentence).startswith(
            _norm(self.sentence)
        )


def _norm(text: str) -> str:
    return " ".join(text.replace("*", "").split())


def notebook_cells(path) -> list[tuple[str, str, list[str]]]:
    """``(cell_type, source, tags)`` for each cell of a py:percent ``.py`` or an ``.ipynb``.

    The cells are numbered as jupytext numbers them (the header is metadata, not a cell),
    so an index here is the cell's index in the converted or executed notebook.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    out: list[tuple[str, str, list[str]]] = []
    if path.suffix == ".ipynb":
        for c in json.loads(text)["cells"]:
            src = c["source"] if isinstance(c["source"], str) else "".join(c["source"])
            out.append((c["cell_type"], src, list(c.get("metadata", {}).get("tags", []))))
        return out
    lines = text.splitlines()
    if lines and lines[0].strip() == "# ---":  # the jupytext header
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "# ---")
        lines = lines[end + 1 :]
    cells: list[tuple[str, list[str], list[str]]] = []  # (type, raw lines, tags)
    for line in lines:
        if line.startswith("# %%"):
            kind = "markdown" if re.search(r"\[(markdown|md)\]", line) else "code"
            m = re.search(r"tags=(\[[^\]]*\])", line)
            cells.append((kind, [], json.loads(m.group(1)) if m else []))
        elif cells:
            cells[-1][1].append(line)
    for kind, body, tags in cells:
        while body and not body[-1].strip():
            body.pop()
        while body and not body[0].strip():
            body.pop(0)
        if kind == "markdown":
            body = [ln[2:] if ln.startswith("# ") else ln.lstrip("#") for ln in body]
        else:  # jupytext comments out magics: "# %matplotlib inline"
            body = [ln[2:] if re.match(r"# %[a-z]", ln) else ln for ln in body]
        out.append((kind, "\n".join(body), tags))
    return out


def split_sentences(markdown: str) -> list[str]:
    """The sentences of a markdown text: paragraphs, list items and table rows split apart,
    then sentences at ``.``/``!``/``?`` (abbreviations such as "e.g." kept whole).

    Fenced code is dropped; inline code and maths stay, but their digits and words never
    make a sentence a claim (see :func:`claim_words`).

    >>> split_sentences("It rises. See e.g. $x = 1.5$.\\n\\n- a list item\\n- another")
    ['It rises.', 'See e.g. $x = 1.5$.', 'a list item', 'another']
    """
    text = re.sub(r"```.*?```", " ", markdown, flags=re.S)
    text = re.sub(r"<!--.*?-->", " ", text, flags=re.S)
    text = re.sub(
        r"\$\$(.*?)\$\$", lambda m: "$$" + " ".join(m.group(1).split()) + "$$", text, flags=re.S
    )
    units: list[str] = []
    for para in re.split(r"\n\s*\n", text):
        current: list[str] = []
        for line in para.splitlines():
            stripped = line.strip()
            if re.match(r"^(?:#+\s|\|)", stripped):  # a heading or a table row: alone
                units += [" ".join(current), "\x03" + re.sub(r"^#+\s+", "", stripped)]
                current = []
            elif re.match(r"^(?:[-*+]\s|\d+\.\s)", stripped):  # a list item
                units.append(" ".join(current))
                current = [re.sub(r"^(?:[-*+]\s+|\d+\.\s+)", "", stripped)]
            else:
                current.append(stripped)
        units.append(" ".join(current))
    sentences = []
    for unit in units:
        unit = " ".join(unit.split())
        if unit.startswith("\x03"):  # headings and table rows are not split
            sentences.append(unit[1:])
            continue
        for i, abbr in enumerate(_ABBREVIATIONS):
            unit = unit.replace(abbr, f"\x01{i}\x01")
        masked, spans = _mask_spans(unit)
        for part in re.split(r"(?<=[.!?])[\"')\]*_]*\s+(?=[A-Z0-9(*\"'\[\x02])", masked):
            for j, span in enumerate(spans):
                part = part.replace(f"\x02{j}\x02", span)
            for i, abbr in enumerate(_ABBREVIATIONS):
                part = part.replace(f"\x01{i}\x01", abbr)
            if part.strip():
                sentences.append(part.strip())
    return sentences


def _mask_spans(text: str) -> tuple[str, list[str]]:
    """Replace ``code`` and ``$maths$`` by placeholders so that sentences never split in them."""
    spans: list[str] = []

    def keep(m: re.Match) -> str:
        spans.append(m.group(0))
        return f"\x02{len(spans) - 1}\x02"

    return re.sub(r"\$\$.*?\$\$|\$[^$]+\$|`[^`]+`", keep, text), spans


def claim_words(sentence: str, *, generated: bool = False) -> list[str]:
    """What makes ``sentence`` a statement about a run: decimal or percent numbers and
    direction/comparison words, outside inline code, maths, links' targets and
    ``{placeholders}`` (the generated parts of a :func:`say` template). With
    ``generated=True`` (the literal text of a template) only the direction and comparison
    words count: the numbers and "this run" of a template are filled from the run.

    >>> claim_words("The loss drops to 0.42 (see `clip_r = 1.5`).")
    ['drops', '0.42']
    >>> claim_words("Large $c$ means strongly curved.")
    []
    """
    text = re.sub(r"\$\$.*?\$\$|\$[^$]+\$|`[^`]+`", " ", sentence)
    text = re.sub(r"\]\([^)]*\)", "]", text)  # a link's target
    text = re.sub(r"\{[^{}]*\}", " ", text)  # a say template's generated parts
    words = [" ".join(m.group(0).split()) for m in _WORDS.finditer(text)]
    if generated:  # a template's numbers and framing are the run's; its fixed words are not
        return words
    words += [" ".join(m.group(0).split()) for m in _CONCLUSION.finditer(text)]
    return words + [m.group(0) for m in _NUMBER.finditer(text)]


def _stems(text: str) -> set[str]:
    out = set()
    for w in re.findall(r"[a-z0-9]+", text.lower()):
        if w in _STOP or len(w) < 3:
            continue
        for suffix in ("ing", "ed", "es", "s", "e"):
            if w.endswith(suffix) and len(w) - len(suffix) >= 3:
                w = w[: -len(suffix)]
                break
        out.add(w)
    return out


def names(claim: str, sentence: str) -> bool:
    """Whether a :func:`check`'s ``claim`` text names ``sentence``: at least half of the
    claim's content words (and at least two, or all when it has fewer) occur in it.

    >>> names("training revives dead codewords", "Training brings most dead codewords back.")
    True
    >>> names("the loss ends below the collapse level", "The curvatures move together.")
    False
    """
    c, s = _stems(claim), _stems(sentence)
    shared = len(c & s)
    return bool(c) and shared >= min(2, len(c)) and shared >= 0.5 * len(c)


def _code_calls(source: str, attr: str) -> list[str]:
    """The literal text of the claim of every ``claims.<attr>(...)`` call in a code cell
    (the template for ``say``, the claim for ``check``; an f-string's literal parts)."""
    code = "\n".join("" if ln.lstrip().startswith(("%", "!")) else ln for ln in source.splitlines())
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []
    position = 0 if attr == "say" else 1
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr != attr or not (
            isinstance(node.func.value, ast.Name) and node.func.value.id == "claims"
        ):
            continue
        arg = node.args[position] if len(node.args) > position else None
        for kw in node.keywords:
            if kw.arg in ("claim", "text"):
                arg = kw.value
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            found.append(arg.value)
        elif isinstance(arg, ast.JoinedStr):
            found.append(
                "".join(str(v.value) if isinstance(v, ast.Constant) else "{}" for v in arg.values)
            )
    return found


def scan_notebook(path, allowlist: Sequence[Allowance] = ()) -> list[Finding]:
    """Sentences of a notebook that state a run's result but are neither generated nor checked.

    The rule (conventions, "Notebooks" rule 7): a markdown sentence with a decimal or
    percent number, or a direction/comparison word (:func:`claim_words`), must be followed,
    in the code cells before the next markdown cell, by a :func:`check` whose claim
    :func:`names` it (for the opening cell and a "Summary" cell, which restate the lesson,
    any check of the notebook). Inside a :func:`say` template the ``{placeholders}`` are generated;
    a template sentence whose *literal* words make a claim needs such a check too (in its
    own cell or the next ones). ``allowlist`` entries (:func:`load_allowlist`) exempt the
    true exceptions: definitions, the paper's numbers, reasoning.

    Returns: the findings, in notebook order (empty when the notebook is clean).
    """
    path = Path(path)
    cells = notebook_cells(path)
    findings = []
    for i, (kind, source, _tags) in enumerate(cells):
        if kind == "markdown":
            sentences = [(s, "markdown") for s in split_sentences(source)]
            after = i + 1
        elif kind == "code":
            sentences = [(s, "say") for t in _code_calls(source, "say") for s in split_sentences(t)]
            after = i
        else:
            continue
        if not sentences:
            continue
        checks = []
        if kind == "markdown" and (i == 0 or _OVERVIEW.search(source)):
            checks = [c for _, src, _ in cells for c in _code_calls(src, "check")]
        for kind2, source2, _ in cells[after:]:
            if kind2 == "markdown":
                break
            checks += _code_calls(source2, "check")
        for sentence, where in sentences:
            words = claim_words(sentence, generated=where == "say")
            if not words or any(names(c, sentence) for c in checks):
                continue
            finding = Finding(path.stem, i, sentence, tuple(words), where)
            if not any(a.matches(finding) for a in allowlist):
                findings.append(finding)
    return findings


def load_allowlist(path) -> list[Allowance]:
    """The allow-list: ``{notebook stem: [{sentence: start of it, reason: why}, ...]}`` (YAML).

    Every entry needs a non-empty reason.
    """
    import yaml

    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    out = []
    for notebook, entries in data.items():
        for entry in entries or []:
            reason = str(entry.get("reason", "")).strip()
            sentence = str(entry.get("sentence", "")).strip()
            if not reason or not sentence:
                raise ValueError(f"{path}: {notebook}: each entry needs a sentence and a reason")
            out.append(Allowance(str(notebook), sentence, reason))
    return out


def unused_allowances(paths, allowlist: Sequence[Allowance]) -> list[Allowance]:
    """Allow-list entries of the given notebooks that exempt nothing (stale: remove them)."""
    flagged = [f for p in paths for f in scan_notebook(p)]
    stems = {Path(p).stem for p in paths}
    return [a for a in allowlist if a.notebook in stems and not any(a.matches(f) for f in flagged)]
