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


def _chapter_summary(root: Path, chapter) -> dict:
    from .runner import stored_metadata

    quick = _load(root, "quick", chapter.slug) or {"claims": [], "seeds": {}}
    meta = stored_metadata(chapter)
    claims = quick.get("claims", [])
    return {
        "quick": quick,
        "full": _load(root, "full", chapter.slug),
        "verdict": f"{sum(c['holds'] for c in claims)} of {len(claims)} hold" if claims else "no record",
        "seeds": ", ".join(s for s, v in quick.get("seeds", {}).items() if v.get("holds")) or "–",
        "runtime": f"{meta['runtime_s']:.0f} s" if meta.get("runtime_s") is not None else "–",
        "device": quick.get("device", "–"),
    }


def _measured(claim: dict) -> str:
    return f"{_fmt(claim.get('measured'))} {claim.get('comparison', '')} {_fmt(claim.get('threshold'))}"


def render(root: Path) -> str:
    lines = [HEADER]
    written = book.chapters(root)
    if not written:
        lines.append("\nNo chapter has been written yet.\n")
        return "\n".join(lines)
    summaries = {ch.slug: _chapter_summary(root, ch) for ch in written}
    lines += ["\n## Summary\n", "| chapter | paper | claims | seeds | quick run | device |", "|---|---|---|---|---|---|"]
    for ch in written:
        info = summaries[ch.slug]
        number = PAPERS_BY_SLUG[ch.slug].seed_number if ch.slug in PAPERS_BY_SLUG else ""
        lines.append(f"| {{doc}}`{ch.part}/{ch.slug}` | {number} | {info['verdict']} | {info['seeds']} | "
                     f"{info['runtime']} | {info['device']} |")
    for part, title in PARTS.items():
        in_part = [ch for ch in written if ch.part == part]
        if not in_part:
            continue
        lines.append(f"\n## {title}")
        for ch in in_part:
            info = summaries[ch.slug]
            full_by_statement = {c["statement"]: c for c in (info["full"] or {}).get("claims", [])}
            lines += [f"\n### {{doc}}`{ch.part}/{ch.slug}`\n",
                      f"Quick run {info['runtime']} on {info['device']}; all claims held on seeds: {info['seeds']}.\n",
                      "| claim | paper | quick | verdict | full |", "|---|---|---|---|---|"]
            for claim in info["quick"].get("claims", []):
                full_claim = full_by_statement.get(claim["statement"])
                full = "–" if full_claim is None else (
                    f"{_measured(full_claim)} ({'holds' if full_claim['holds'] else 'fails'})")
                statement = claim["statement"].replace("|", "\\|")
                lines.append(f"| {statement} | {_fmt(claim.get('paper'))} | {_measured(claim)} | "
                             f"{'✔ holds' if claim.get('holds') else '✘ fails'} | {full} |")
    return "\n".join(lines).rstrip() + "\n"


def write(root: Path | None = None) -> Path:
    root = root or book.require_root()
    path = root / PAGE
    path.write_text(render(root))
    return path


def is_current(root: Path) -> bool:
    path = root / PAGE
    return path.exists() and path.read_text() == render(root)
