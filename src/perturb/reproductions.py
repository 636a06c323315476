"""The Reproductions page: every chapter's claims, as measured, generated from ``results/``."""
from __future__ import annotations

import json
from pathlib import Path

from . import book
from .catalog import PAPERS_BY_SLUG, PARTS

PAGE = "book/reproductions.md"

HEADER = """# Reproductions

Every chapter ends by asserting its claims: measured results compared, in the same run, against a baseline or
a ground truth. This page is generated from the chapters' records in `results/` by
`python -m perturb reproductions` (the run command refreshes it), and a test fails when it is out of date.

- **Quick** is the value measured by the default run (CPU, seed 0) whose outputs the chapter shows; its verdict
  is re-checked by every CI run, which re-executes each chapter.
- **Seeds** lists the seeds on which all of the chapter's claims held with the current code.
- **Full** is the value of a full-scale run on a GPU, where one has been made.
"""


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, (int, float)):
        return f"{value:.4g}"
    return str(value)


def _load(root: Path, scale: str, slug: str) -> dict | None:
    path = root / "results" / scale / f"{slug}.json"
    return json.loads(path.read_text()) if path.exists() else None


def render(root: Path) -> str:
    from .runner import stored_metadata

    lines = [HEADER]
    written = book.chapters(root)
    if not written:
        lines.append("\nNo chapter has been written yet.\n")
    for part, title in PARTS.items():
        in_part = [ch for ch in written if ch.part == part]
        if not in_part:
            continue
        lines += [f"\n## {title}\n", "```{list-table}", ":header-rows: 1", ":widths: auto", "",
                  "* - Chapter", "  - Claim", "  - Paper", "  - Quick", "  - Verdict", "  - Full",
                  "  - Seeds", "  - Run time", "  - Device"]
        for chapter in in_part:
            quick = _load(root, "quick", chapter.slug) or {"claims": [], "seeds": {}}
            full = _load(root, "full", chapter.slug)
            full_by_statement = {c["statement"]: c for c in (full or {}).get("claims", [])}
            meta = stored_metadata(chapter)
            seeds = ", ".join(s for s, v in quick.get("seeds", {}).items() if v.get("holds")) or "–"
            runtime = f"{meta['runtime_s']:.0f} s" if meta.get("runtime_s") is not None else "–"
            number = PAPERS_BY_SLUG[chapter.slug].seed_number if chapter.slug in PAPERS_BY_SLUG else ""
            claims = quick.get("claims") or [{"statement": "(no record yet)", "measured": None, "holds": False}]
            for i, claim in enumerate(claims):
                full_claim = full_by_statement.get(claim["statement"])
                full_value = "–" if full_claim is None else (
                    f"{_fmt(full_claim['measured'])} ({'holds' if full_claim['holds'] else 'fails'})")
                first = i == 0
                lines += [f"* - {{doc}}`{chapter.part}/{chapter.slug}` (paper {number})" if first else "* - ",
                          f"  - {claim['statement']}",
                          f"  - {_fmt(claim.get('paper'))}",
                          f"  - {_fmt(claim.get('measured'))} {claim.get('comparison', '')} "
                          f"{_fmt(claim.get('threshold')) if 'threshold' in claim else ''}".rstrip(),
                          f"  - {'✔ holds' if claim.get('holds') else '✘ fails'}",
                          f"  - {full_value}",
                          f"  - {seeds if first else ''}",
                          f"  - {runtime if first else ''}",
                          f"  - {quick.get('device', '–') if first else ''}"]
        lines.append("```")
    return "\n".join(lines).rstrip() + "\n"


def write(root: Path | None = None) -> Path:
    root = root or book.require_root()
    path = root / PAGE
    path.write_text(render(root))
    return path


def is_current(root: Path) -> bool:
    path = root / PAGE
    return path.exists() and path.read_text() == render(root)
