"""Where the book's files are, and what they say about each chapter.

A *chapter* is a MyST-Markdown notebook ``book/<part>/<slug>.md`` (the only source) paired with
``book/<part>/<slug>.ipynb`` (its cells plus the outputs of the last quick run). This module finds them, reads
the table of contents, and computes the *code hash* that ties stored outputs to the code that produced them.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .catalog import PAPERS_BY_SLUG, PARTS

CHECKED_TAG = "nbval-check-output"
PARAMETERS_TAG = "parameters"
DEFAULT_PARAMETERS = {"SCALE": "quick", "DEVICE": "auto", "SEED": 0}
QUICK_TARGET_S = 30.0  # quick-scale budget per chapter on a 2-core CPU
QUICK_LIMIT_S = 60.0  # a stored quick run slower than this fails the book tests


def repo_root(start: Path | None = None) -> Path | None:
    """The checkout's top folder (the one holding ``_toc.yml``), or None when running outside it (e.g. Colab)."""
    env = os.environ.get("PERTURB_ROOT")
    if env:
        return Path(env).resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").is_file() and (folder / "book").is_dir():
            return folder
    package_root = Path(__file__).resolve().parents[3]
    if (package_root / "_toc.yml").is_file():
        return package_root
    return None


def require_root() -> Path:
    root = repo_root()
    if root is None:
        raise RuntimeError("not inside a Perturb checkout (no _toc.yml found above the current folder)")
    return root


@dataclass(frozen=True)
class Chapter:
    slug: str
    part: str
    md: Path
    root: Path

    @property
    def ipynb(self) -> Path:
        return self.md.with_suffix(".ipynb")

    @property
    def docname(self) -> str:
        """The path the table of contents uses: relative to the root, without suffix."""
        return self.md.relative_to(self.root).with_suffix("").as_posix()

    def result_path(self, scale: str) -> Path:
        return self.root / "results" / scale / f"{self.slug}.json"


def is_paired_notebook(md: Path) -> bool:
    head = md.read_text(encoding="utf-8", errors="replace")[:2000]
    return head.startswith("---") and "jupytext" in head and "ipynb" in head


def chapters(root: Path | None = None) -> list[Chapter]:
    """Every written chapter, in the catalogue's order."""
    root = root or require_root()
    found = {}
    for part in PARTS:
        for md in sorted((root / "book" / part).glob("*.md")):
            if is_paired_notebook(md):
                found[md.stem] = Chapter(md.stem, part, md, root)
    order = list(PAPERS_BY_SLUG)
    return sorted(found.values(), key=lambda ch: order.index(ch.slug) if ch.slug in order else len(order))


def read_md_notebook(md: Path):
    import jupytext

    return jupytext.read(md, fmt="md:myst")


def cell_tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def code_hash(md: Path) -> str:
    """Hash of what determines a chapter's outputs: its code cells' sources and tags, in order.

    Markdown edits do not change it (prose does not change outputs), so a typo fix needs no re-run; any edit to
    code does, and ``python -m perturb check`` then reports the stored outputs as stale.
    """
    nb = read_md_notebook(md)
    digest = hashlib.sha256()
    for cell in nb.cells:
        if cell.cell_type == "code":
            digest.update(json.dumps([cell.source, sorted(cell_tags(cell))]).encode())
    return digest.hexdigest()[:16]


def toc_docnames(root: Path) -> set[str]:
    import yaml

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "file" and isinstance(value, str):
                    yield value.removesuffix(".md").removesuffix(".ipynb")
                else:
                    yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    return set(walk(yaml.safe_load((root / "_toc.yml").read_text())))


def find_chapter(slug: str, root: Path | None = None) -> Chapter:
    """The written chapter called ``slug``; an unknown or not-yet-written name is refused with the choices."""
    written = {ch.slug: ch for ch in chapters(root)}
    if slug in written:
        return written[slug]
    if slug in PAPERS_BY_SLUG:
        raise KeyError(f"chapter {slug!r} is planned but not written yet; written chapters: "
                       f"{', '.join(written) or 'none'}")
    raise KeyError(f"unknown chapter {slug!r}; written chapters: {', '.join(written) or 'none'}")
