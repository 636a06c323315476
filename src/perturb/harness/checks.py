"""Static checks of the book: what ``python -m perturb check`` and the book tests enforce.

Each check reads files only (no execution), so it is fast enough to run before every commit.
"""
from __future__ import annotations

import fnmatch
import re
import json
from pathlib import Path

import nbformat
import yaml

from . import book, reproductions
from .claims import ACCEPTED, COMPARISONS, REQUIRED_SEEDS, aggregate_verdict
from .runner import stored_metadata

PAIRED_MD_EXCLUDE = "book/*/*-*.md"  # the _config.yml pattern that hides paired .md files from the site build


def cell_signature(nb) -> list:
    return [(c.cell_type, c.source.strip(), sorted(book.cell_tags(c))) for c in nb.cells]


def chapter_problems(chapter: book.Chapter, toc: set[str]) -> list[str]:
    problems = []
    source = book.read_md_notebook(chapter.md)
    code_cells = [c for c in source.cells if c.cell_type == "code"]
    if not chapter.ipynb.exists():
        problems.append(f"no paired notebook {chapter.ipynb.name}: run `python -m perturb run {chapter.slug}`")
    else:
        stored = nbformat.read(chapter.ipynb, as_version=4)
        if cell_signature(stored) != cell_signature(source):
            problems.append(f"{chapter.md.name} and {chapter.ipynb.name} differ in their cells: "
                            f"run `python -m perturb run {chapter.slug}`")
        meta = stored_metadata(chapter)
        if meta.get("code_hash") != book.code_hash(chapter.md):
            problems.append(f"stored outputs are stale (made by other code than {chapter.md.name} holds): "
                            f"run `python -m perturb run {chapter.slug}`")
        runtime = meta.get("runtime_s")
        if runtime is None:
            problems.append("no recorded quick run time")
        elif runtime > book.QUICK_LIMIT_S:
            problems.append(f"quick run took {runtime:.0f} s, over the {book.QUICK_LIMIT_S:.0f} s limit")
        if any(o.get("output_type") == "error" for c in stored.cells for o in c.get("outputs", [])):
            problems.append("stored outputs hold an error")
    if chapter.docname not in toc:
        problems.append(f"not in _toc.yml (add `- file: {chapter.docname}` under its part)")
    params = [c for c in code_cells if book.PARAMETERS_TAG in book.cell_tags(c)]
    if len(params) != 1:
        problems.append("needs exactly one code cell tagged `parameters`")
    else:
        names = {line.split("=")[0].strip() for line in params[0].source.splitlines() if "=" in line}
        if names != set(book.DEFAULT_PARAMETERS):
            problems.append(f"the parameters cell must set exactly {', '.join(book.DEFAULT_PARAMETERS)}")
    if not code_cells or book.CHECKED_TAG not in book.cell_tags(code_cells[-1]):
        problems.append(f"the last code cell must be the claims check, tagged `{book.CHECKED_TAG}`")
    problems += record_problems(chapter)
    index = chapter.root / "book" / chapter.part / "index.md"
    if index.exists() and f"{{doc}}`{chapter.slug}`" not in index.read_text():
        problems.append(f"the roadmap in book/{chapter.part}/index.md does not link it: write {{doc}}`{chapter.slug}`")
    if "-" not in chapter.slug:
        problems.append("chapter slugs are hyphenated (the site build hides paired .md files by that pattern)")
    return problems


THRESHOLD_RATIO_LIMIT = 10.0  # a threshold further than this factor from every seed's measurement means nothing


def _ratio(measured, threshold) -> float | None:
    """How far a threshold lies from a measurement, as a factor; None where it is undefined (a zero)."""
    if measured is None or threshold is None or measured == 0 or threshold == 0:
        return None
    return max(abs(measured / threshold), abs(threshold / measured))


def loose_threshold(values: list, threshold) -> bool:
    """True when the threshold lies more than THRESHOLD_RATIO_LIMIT from every one of the measured values.

    A zero on either side (a soundness count of zero violations, a bound at zero) is exempt: no factor applies.
    """
    ratios = [r for r in (_ratio(v, threshold) for v in values) if r is not None]
    return bool(ratios) and min(ratios) > THRESHOLD_RATIO_LIMIT


def record_problems(chapter: book.Chapter) -> list[str]:
    """What the quick record of a chapter must show: headlines with baselines, five seeds, verdicts as expected."""
    path = chapter.result_path("quick")
    name = path.relative_to(chapter.root).as_posix()
    if not path.exists():
        return [f"no results record {name}"]
    data = json.loads(path.read_text())
    headlines, mechanisms = data.get("headlines") or [], data.get("mechanisms") or []
    problems = []
    if not headlines:
        problems.append(f"{name} holds no headline claim: assert the paper's own comparison with claims.headline")
    if data.get("code_hash") != book.code_hash(chapter.md):
        problems.append(f"{name} was written by other code than {chapter.md.name} holds: re-run seeds "
                        f"{', '.join(map(str, REQUIRED_SEEDS))}")
        return problems
    seeds = data.get("seeds", {})
    missing = [s for s in REQUIRED_SEEDS if str(s) not in seeds]
    if missing:
        problems.append(f"{name} lacks seeds {', '.join(map(str, missing))}: run "
                        f"`python -m perturb run {chapter.slug} --seeds 0-4`")
    for i, headline in enumerate(headlines):
        statement = headline.get("statement", f"headline {i + 1}")
        if not str(headline.get("baseline") or "").strip():
            problems.append(f"headline {statement!r} names no baseline")
        expect = headline.get("expect")
        seed_verdicts = {s: v["verdicts"][i] for s, v in seeds.items() if i < len(v.get("verdicts", []))}
        wrong = [s for s, verdict in seed_verdicts.items() if verdict not in ACCEPTED.get(expect, ())]
        if wrong:
            problems.append(f"headline {statement!r} expects {expect!r} but seed(s) {', '.join(wrong)} gave "
                            f"{', '.join(sorted({seed_verdicts[s] for s in wrong}))}")
        elif not missing and seed_verdicts and aggregate_verdict(list(seed_verdicts.values())) != expect:
            problems.append(f"headline {statement!r} expects {expect!r} but seeds "
                            f"{', '.join(seed_verdicts)} aggregate to "
                            f"{aggregate_verdict(list(seed_verdicts.values()))!r}: state the verdict they support")
        reproduced = [v["headlines"][i] for s, v in seeds.items()
                      if i < len(v.get("headlines", [])) and seed_verdicts.get(s) == "reproduced"]
        if loose_threshold(reproduced, headline.get("threshold")):
            problems.append(f"headline {statement!r}: threshold {headline.get('threshold'):g} lies more than "
                            f"{THRESHOLD_RATIO_LIMIT:g}x from every seed's measurement: set the margin where a "
                            f"wrong result would cross it")
    for i, claim in enumerate(mechanisms):
        statement = claim.get("statement", f"claim {i + 1}")
        values = [v["mechanisms"][i] for v in seeds.values() if i < len(v.get("mechanisms", []))]
        failing = [s for s, v in seeds.items() if i < len(v.get("mechanisms", []))
                   and not COMPARISONS[claim["comparison"]](v["mechanisms"][i], claim["threshold"])]
        if failing:
            problems.append(f"mechanism claim {statement!r} fails on seed(s) {', '.join(failing)}")
        if loose_threshold(values, claim.get("threshold")):
            problems.append(f"mechanism claim {statement!r}: threshold {claim.get('threshold'):g} lies more than "
                            f"{THRESHOLD_RATIO_LIMIT:g}x from every seed's measurement")
    return problems


# Decimal numbers in prose (0.974, 1.4e-3, 23.7%): integers (sizes, years, counts) are left alone.
PROSE_NUMBER = re.compile(r"(?<![\w.\-/])(\d+\.\d+(?:[eE][-+]?\d+)?)(?![\w.]*\d)")
OUTPUT_NUMBER = re.compile(r"-?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
MATH_OR_CODE = re.compile(r"\$\$.*?\$\$|\$[^$\n]+\$|``.*?``|`[^`\n]*`|\{[a-z:]+\}`[^`]*`|\[[^\]]*\]\([^)]*\)|"
                          r"https?://\S+|^```.*?^```|^:[a-z_-]+:.*?$", re.S | re.M)
CITED_SENTENCE = re.compile(r"paper|report|{cite|official|authors'?|their table", re.I)


def _numbers_in(text: str) -> list[float]:
    found = []
    for token in OUTPUT_NUMBER.findall(text):
        try:
            found.append(float(token))
        except ValueError:
            pass
    return found


def _run_numbers(chapter: book.Chapter) -> list[float]:
    """Every number the chapter's stored run shows or records: outputs' text, the record, the code's constants."""
    numbers: list[float] = []
    if chapter.ipynb.exists():
        stored = nbformat.read(chapter.ipynb, as_version=4)
        for cell in stored.cells:
            if cell.cell_type == "code":
                numbers += _numbers_in(cell.source)
            for output in cell.get("outputs", []):
                texts = [output.get("text", "")] + [v for k, v in output.get("data", {}).items()
                                                    if k.startswith("text/") or "papermill" in k]
                numbers += _numbers_in("".join(t if isinstance(t, str) else "".join(t) for t in texts))
    record = chapter.result_path("quick")
    if record.exists():
        numbers += _numbers_in(record.read_text())
    return numbers


def _matches(prose: str, numbers: list[float]) -> bool:
    value = float(prose)
    mantissa = prose.lower().split("e")[0]
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    exponent = int(prose.lower().split("e")[1]) if "e" in prose.lower() else 0
    tolerance = 0.5 * 10.0 ** (exponent - decimals) * (1 + 1e-9)
    for n in numbers:
        for shown in (n, 100.0 * n, abs(n), 100.0 * abs(n)):  # a fraction may be quoted as a percentage
            if abs(shown - value) <= tolerance:
                return True
    return False


def unmatched_prose_numbers(chapter: book.Chapter) -> list[str]:
    """Decimal numbers in the chapter's prose that no output, record value or code constant of the run shows.

    Leaves alone what is not a result: math, code, links, directive options, integers (sizes, years), and
    sentences that quote the paper (they name the paper, its report, its authors or a citation).
    """
    source = book.read_md_notebook(chapter.md)
    numbers = _run_numbers(chapter)
    found = []
    for cell in source.cells:
        if cell.cell_type != "markdown":
            continue
        text = MATH_OR_CODE.sub(" ", cell.source)
        for sentence in re.split(r"(?<=[.;:!?])\s+|\n\s*\n|\n- ", text):
            if CITED_SENTENCE.search(sentence):
                continue
            for token in PROSE_NUMBER.findall(sentence):
                if not _matches(token, numbers) and token not in found:
                    found.append(token)
    return found


def chapter_warnings(chapter: book.Chapter) -> list[str]:
    """What ``check`` reports without failing: prose numbers the run does not show."""
    unmatched = unmatched_prose_numbers(chapter)
    if not unmatched:
        return []
    return [f"prose quotes {', '.join(unmatched)}, which no output of the run shows: print it or record it with "
            f"claims.observe"]


EQUATION_LABEL = re.compile(r"^\$\$\s*\(([^)]+)\)\s*$|^:label:\s*(\S+)\s*$", re.M)


def duplicate_equation_labels(root: Path) -> list[str]:
    """Equation labels are global to the site build: two pages defining one label is a (fatal) warning."""
    where: dict[str, list[str]] = {}
    for md in sorted((root / "book").rglob("*.md")):
        text = md.read_text(encoding="utf-8", errors="replace")
        for match in EQUATION_LABEL.finditer(text):
            label = match.group(1) or match.group(2)
            if label.startswith("eq"):
                where.setdefault(label, []).append(md.relative_to(root).as_posix())
    return [f"equation label {label!r} is defined in {' and '.join(files)}: prefix it with the chapter's name"
            for label, files in sorted(where.items()) if len(set(files)) > 1]


def book_problems(root: Path | None = None) -> dict[str, list[str]]:
    """Problems by chapter slug (and under 'book' for the book as a whole); empty lists mean all is well."""
    root = root or book.require_root()
    toc = book.toc_docnames(root)
    found = {ch.slug: chapter_problems(ch, toc) for ch in book.chapters(root)}
    general = []
    config = yaml.safe_load((root / "_config.yml").read_text())
    excluded = config.get("exclude_patterns", [])
    if PAIRED_MD_EXCLUDE not in excluded:
        general.append(f"_config.yml must exclude the paired chapter sources with {PAIRED_MD_EXCLUDE!r}")
    chapter_mds = {ch.md.relative_to(root).as_posix() for ch in book.chapters(root)}
    for md in sorted((root / "book").glob("*/*.md")):
        rel = md.relative_to(root).as_posix()
        if fnmatch.fnmatch(rel, PAIRED_MD_EXCLUDE) and rel not in chapter_mds:
            general.append(f"{rel} is not a chapter but its hyphenated name hides it from the site build")
    for docname in sorted(toc):
        if not any((root / f"{docname}{suffix}").exists() for suffix in (".md", ".ipynb")):
            general.append(f"_toc.yml lists {docname}, which does not exist")
    general += duplicate_equation_labels(root)
    if not reproductions.is_current(root):
        general.append("book/reproductions.md is out of date with results/: run `python -m perturb reproductions`")
    found["book"] = general
    return found
