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
    record = chapter.result_path("quick")
    if not record.exists():
        problems.append(f"no results record {record.relative_to(chapter.root)}")
    else:
        data = json.loads(record.read_text())
        if not data.get("claims"):
            problems.append(f"{record.name} holds no claims")
        elif not all(c.get("holds") for c in data["claims"]):
            problems.append(f"{record.name} records a failing claim")
    index = chapter.root / "book" / chapter.part / "index.md"
    if index.exists() and f"{{doc}}`{chapter.slug}`" not in index.read_text():
        problems.append(f"the roadmap in book/{chapter.part}/index.md does not link it: write {{doc}}`{chapter.slug}`")
    if "-" not in chapter.slug:
        problems.append("chapter slugs are hyphenated (the site build hides paired .md files by that pattern)")
    return problems


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
