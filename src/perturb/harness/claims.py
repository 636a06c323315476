"""Claims: the measured results a chapter asserts, printed stably, recorded in ``results/``, and enforced.

A chapter registers each claim with the value it measured in this run, a comparison and a threshold (and the
paper's corresponding number, when there is one)::

    claims = Claims(cfg)
    claims.add("CROWN certifies far more points than IBP at eps=0.02",
               measured=crown_acc - ibp_acc, comparison=">=", threshold=0.5, paper=0.9)
    claims.show()    # an ordinary cell: the numbers, for the reader
    claims.check()   # the last cell, tagged nbval-check-output: verdicts only, record written, raises on failure

``check`` prints one line per claim with its verdict and no numbers, so the checked output is the same on every
machine for as long as every claim holds; the numbers live in the ``show`` table and in the record.

The record ``results/<scale>/<slug>.json`` keeps the claims of the default seed and, under ``seeds``, the verdict
and values of every seed the claims were checked on with the current code (a code change clears them). It has
no timestamps, so re-running unchanged code leaves it byte-identical.
"""
from __future__ import annotations

import json
import math
import operator
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import RunConfig

COMPARISONS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt, "==": operator.eq}
SIGNIFICANT_DIGITS = 6  # values are stored rounded, so float noise in the last bits does not churn records


class ClaimFailed(AssertionError):
    """At least one claim of a chapter did not hold in this run."""


def _rounded(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    value = float(value)
    if not math.isfinite(value) or value == 0.0:
        return value
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


@dataclass
class Claim:
    statement: str
    measured: float
    comparison: str
    threshold: float
    paper: Any = None

    @property
    def holds(self) -> bool:
        return bool(math.isfinite(self.measured) and COMPARISONS[self.comparison](self.measured, self.threshold))

    def as_record(self) -> dict:
        return {"statement": self.statement, "measured": _rounded(self.measured), "comparison": self.comparison,
                "threshold": _rounded(self.threshold), "paper": _rounded(self.paper), "holds": self.holds}


class Claims:
    """The claims of one chapter run (see the module docstring for the workflow)."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.items: list[Claim] = []

    def add(self, statement: str, measured: Any, comparison: str, threshold: float, paper: Any = None) -> Claim:
        if comparison not in COMPARISONS:
            raise ValueError(f"unknown comparison {comparison!r}; accepted: {', '.join(COMPARISONS)}")
        if any(claim.statement == statement for claim in self.items):
            raise ValueError(f"claim registered twice: {statement!r}")
        measured = float(measured.item() if hasattr(measured, "item") else measured)
        claim = Claim(statement, measured, comparison, float(threshold), paper)
        self.items.append(claim)
        return claim

    def table(self) -> str:
        """The claims with their numbers, as a plain-text table."""
        lines = [f"{'measured':>12} {'':2} {'threshold':>10} {'paper':>10}  verdict  claim"]
        for claim in self.items:
            paper = "-" if claim.paper is None else (f"{claim.paper:.4g}" if isinstance(claim.paper, (int, float))
                                                     else str(claim.paper))
            lines.append(f"{claim.measured:12.4g} {claim.comparison:2} {claim.threshold:10.4g} {paper:>10}  "
                         f"{'holds' if claim.holds else 'FAILS':7}  {claim.statement}")
        return "\n".join(lines)

    def show(self) -> None:
        print(self.table())

    def record(self, previous: dict | None = None) -> dict:
        """The results record of this run, merged with the seeds already checked on the same code."""
        from . import book

        root = book.repo_root()
        chapter_hash = None
        if root is not None:
            try:
                chapter_hash = book.code_hash(book.find_chapter(self.cfg.slug, root).md)
            except KeyError:
                chapter_hash = None
        this_seed = {"holds": all(c.holds for c in self.items), "measured": [_rounded(c.measured) for c in self.items]}
        seeds: dict = {}
        main: dict | None = None
        if previous and previous.get("code_hash") == chapter_hash and chapter_hash is not None:
            seeds = dict(previous.get("seeds", {}))
            main = previous
        seeds[str(self.cfg.seed)] = this_seed
        if main is None or self.cfg.seed == 0 or main.get("seed") != 0:
            main = {"seed": self.cfg.seed, "device": self.cfg.device.type,
                    "claims": [c.as_record() for c in self.items], "versions": library_versions()}
        return {"slug": self.cfg.slug, "scale": self.cfg.scale, "code_hash": chapter_hash, "seed": main["seed"],
                "device": main["device"], "versions": main["versions"], "claims": main["claims"],
                "seeds": dict(sorted(seeds.items(), key=lambda kv: int(kv[0])))}

    def results_path(self) -> Path:
        from . import book

        root = book.repo_root() or Path.cwd()
        return root / "results" / self.cfg.scale / f"{self.cfg.slug}.json"

    def write(self) -> Path:
        path = self.results_path()
        previous = json.loads(path.read_text()) if path.exists() else None
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.record(previous), indent=1, ensure_ascii=False) + "\n")
        return path

    def check(self) -> None:
        """Write the record, print one verdict line per claim, and raise if any claim fails."""
        if not self.items:
            raise ValueError("no claims registered: a chapter must assert at least one measured result")
        self.write()
        for claim in self.items:
            print(f"{'✔ holds' if claim.holds else '✘ FAILS'}  {claim.statement}")
        failed = [c for c in self.items if not c.holds]
        print(f"{len(self.items) - len(failed)} of {len(self.items)} claims hold")
        if failed:
            detail = "; ".join(f"{c.statement}: measured {c.measured:.4g}, needed {c.comparison} {c.threshold:.4g}"
                               for c in failed)
            raise ClaimFailed(detail)


def library_versions() -> dict:
    import numpy
    import torch

    versions = {"python": platform.python_version(), "numpy": numpy.__version__, "torch": torch.__version__}
    try:
        import scipy
        versions["scipy"] = scipy.__version__
    except ImportError:
        pass
    return versions
