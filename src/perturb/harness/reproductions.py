"""The Reproductions page: does each paper's headline hold here? Generated from ``results/``.

It opens with the scorecard (per paper: its headline in one line, the paper's number, ours across the checked
seeds, the verdict computed from them) and the counts across the book, then lists every chapter's headline,
mechanism claims and observations as measured.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from . import book
from .catalog import PAPERS_BY_SLUG, PARTS
from .claims import COMPARISONS, REQUIRED_SEEDS, VERDICTS

PAGE = "book/reproductions.md"

HEADER = """# Reproductions

Does each paper's headline hold here? Every chapter asserts the paper's own comparison (its method against its
baseline, on its metric or the closest one this scale allows) as a **headline** claim, checks it on seeds
{seeds}, and computes a verdict from the measurements by one rule (the {{doc}}`how-to-use` page states it):
**reproduced** (every seed past the paper's margin), **partly** (every seed on the paper's side, not all past
the margin), **not shown at this scale**, or **contradicted** (every seed the other way, past the mirrored
margin). A "not shown" or "contradicted" verdict is a finding, and the chapter says why.

This page is generated from the chapters' records in `results/` by `python -m perturb reproductions` (the run
command refreshes it), and a test fails when it is out of date. *Ours* is the range over the checked seeds;
*quick* is the default run (CPU), re-executed by every CI run; *full* is a full-scale run on a GPU, where one
has been made.
"""


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        return f"{value:.3g}"
    return str(value).replace("|", "\\|")


def _load(root: Path, scale: str, slug: str) -> dict | None:
    path = root / "results" / scale / f"{slug}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _seed_values(record: dict, kind: str, index: int) -> list[float]:
    return [seed[kind][index] for seed in record.get("seeds", {}).values() if index < len(seed.get(kind, []))]


def _range(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    low, high = min(values), max(values)
    return _fmt(low) if _fmt(low) == _fmt(high) else f"{_fmt(low)} to {_fmt(high)}"


def _seeds_text(record: dict) -> str:
    seeds = sorted(int(s) for s in record.get("seeds", {}))
    if seeds and seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2:
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds)) or "–"


def _headline_rows(record: dict) -> list[dict]:
    rows = []
    verdicts = record.get("verdicts", [])
    for i, headline in enumerate(record.get("headlines", [])):
        rows.append({"headline": headline, "verdict": verdicts[i] if i < len(verdicts) else "–",
                     "ours": _range(_seed_values(record, "headlines", i))})
    return rows


def render(root: Path) -> str:
    lines = [HEADER.format(seeds=", ".join(map(str, REQUIRED_SEEDS)))]
    written = book.chapters(root)
    if not written:
        lines.append("\nNo chapter has been written yet.\n")
        return "\n".join(lines)
    records = {ch.slug: _load(root, "quick", ch.slug) or {} for ch in written}
    fulls = {ch.slug: _load(root, "full", ch.slug) for ch in written}
    counts = Counter(row["verdict"] for ch in written for row in _headline_rows(records[ch.slug]))
    papers = len({ch.slug for ch in written if records[ch.slug].get("headlines")})
    tally = ", ".join(f"{counts[v]} {v}" for v in VERDICTS if counts[v])
    lines += ["\n## Scorecard\n",
              f"**{sum(counts.values())} headlines of {papers} papers: {tally or 'none yet'}.**\n",
              "The chapters' sections below give each headline in full with its baseline and threshold.\n",
              "| paper | headline | paper's number | ours (seeds) | verdict |",
              "|---|---|---|---|---|"]
    for ch in written:
        record = records[ch.slug]
        number = PAPERS_BY_SLUG[ch.slug].seed_number if ch.slug in PAPERS_BY_SLUG else ""
        rows = _headline_rows(record)
        if not rows:
            lines.append(f"| {{doc}}`{ch.part}/{ch.slug}` ({number}) | no headline recorded | – | – | – |")
        for row in rows:
            h = row["headline"]
            paper = f"{{doc}}`{ch.part}/{ch.slug}` ({number})" if row is rows[0] else ""
            lines.append(f"| {paper} | {_cell(h['statement'])} | {_fmt(h.get('paper'))} | "
                         f"{row['ours']} ({_seeds_text(record)}) | **{row['verdict']}** |")
    for part, title in PARTS.items():
        in_part = [ch for ch in written if ch.part == part]
        if not in_part:
            continue
        lines.append(f"\n## {title}")
        for ch in in_part:
            lines += _chapter_section(root, ch, records[ch.slug], fulls[ch.slug])
    return "\n".join(lines).rstrip() + "\n"


def _full_headline(full: dict | None) -> str:
    return "–" if full is None else f"{_fmt(full['measured'])} ({full['verdict']})"


def _full_mechanism(full: dict | None) -> str:
    return "–" if full is None else f"{_fmt(full['measured'])} ({'holds' if full['holds'] else 'fails'})"


def _chapter_section(root: Path, ch, record: dict, full: dict | None) -> list[str]:
    from .runner import stored_metadata

    meta = stored_metadata(ch)
    runtime = f"{meta['runtime_s']:.0f} s" if meta.get("runtime_s") is not None else "–"
    lines = [f"\n### {{doc}}`{ch.part}/{ch.slug}`\n",
             f"Quick run {runtime} on {record.get('device', '–')}; seeds checked with the current code: "
             f"{_seeds_text(record)}.\n"]
    full_headlines = {h["statement"]: h for h in (full or {}).get("headlines", [])}
    full_mechanisms = {m["statement"]: m for m in (full or {}).get("mechanisms", [])}
    rows = _headline_rows(record)
    if rows:
        lines += ["| headline (against its baseline) | needs | paper | ours (seeds) | verdict | full |",
                  "|---|---|---|---|---|---|"]
        for row in rows:
            h = row["headline"]
            f = full_headlines.get(h["statement"])
            lines.append(f"| {_cell(h['statement'])} (vs {_cell(h.get('baseline', ''))}) | "
                         f"{h['comparison']} {_fmt(h['threshold'])} "
                         f"(null {_fmt(h.get('null'))}) | {_fmt(h.get('paper'))} | {row['ours']} | {row['verdict']} | "
                         f"{_full_headline(f)} |")
    mechanisms = record.get("mechanisms", [])
    if mechanisms:
        lines += ["", "| mechanism claim | needs | ours (seeds) | holds on every seed | full |",
                  "|---|---|---|---|---|"]
        for i, m in enumerate(mechanisms):
            values = _seed_values(record, "mechanisms", i)
            f = full_mechanisms.get(m["statement"])
            holds = bool(values) and all(COMPARISONS[m["comparison"]](v, m["threshold"]) for v in values)
            lines.append(f"| {_cell(m['statement'])} | {m['comparison']} {_fmt(m['threshold'])} | {_range(values)} "
                         f"| {'✔' if holds else '✘'} | "
                         f"{_full_mechanism(f)} |")
    observations = record.get("observations", [])
    if observations:
        lines += ["", "| observation | ours (seeds) |", "|---|---|"]
        for i, o in enumerate(observations):
            lines.append(f"| {_cell(o['name'])} | {_range(_seed_values(record, 'observations', i))} |")
    return lines


def write(root: Path | None = None) -> Path:
    root = root or book.require_root()
    path = root / PAGE
    path.write_text(render(root))
    return path


def is_current(root: Path) -> bool:
    path = root / PAGE
    return path.exists() and path.read_text() == render(root)
