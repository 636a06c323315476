"""Claims: what a chapter measured, kept in three kinds, enforced, and recorded in ``results/``.

- A **headline** is the paper's own comparative result: its method against its baseline on its metric (or the
  closest one this scale allows), as one measured number, with the paper's number beside it where it gives one.
  Its verdict is computed from the measurement by the rule below, never typed.
- A **mechanism** claim is a non-trivial property of the method that could fail if the code or the paper were
  wrong; it must hold on every seed.
- An **observation** is a measured value the prose quotes: recorded and shown, not asserted.

Identities and properties true by construction are plain ``assert``s in the chapter, not claims. ::

    claims = Claims(cfg)
    claims.headline("CROWN-IBP training certifies more test points than IBP training at eps=0.1",
                    measured=crown_ibp_verified - ibp_verified, comparison=">=", threshold=0.05, null=0.0,
                    baseline="IBP certified training, same network and schedule", paper=0.07,
                    expect="reproduced")
    claims.mechanism("CROWN is never above the exact MILP margin (violations)", violations, "==", 0)
    claims.observe("clean accuracy of the IBP-trained network", ibp_clean)
    claims.show()    # an ordinary cell: the numbers, for the reader
    claims.check()   # the last cell, tagged nbval-check-output: verdicts only, record written, raises on failure

**The verdict rule.** On one seed a headline is *reproduced* when ``measured <comparison> threshold`` holds;
*partly* when the measurement is strictly on the good side of ``null`` (the value at which method and baseline
are equal) but short of the threshold; *contradicted* when it lies at or beyond the threshold mirrored through
the null (``1 / threshold`` when the null is 1, a ratio; ``2 * null - threshold`` otherwise); and *not shown at
this scale* in between. Across the seeds recorded with the current code: all reproduced gives reproduced, all
contradicted gives contradicted, all reproduced or partly gives partly, anything else not shown at this scale.

The chapter states the verdict it expects. Each run checks its own seed against that expectation (a seed
compatible with it: see :data:`ACCEPTED`) and raises when it differs; it also prints the seed's own verdict, so
the re-executed default seed fails the notebook check when its verdict drifts either way; ``python -m perturb
check`` requires the seeds :data:`REQUIRED_SEEDS` in the record and their aggregate equal to the expectation.
``check`` prints statements and verdicts only, no numbers, so the checked output is the same on every machine; the numbers live in the ``show`` table and in the record ``results/<scale>/<slug>.json``, which
keeps every seed's values and has no timestamps (re-running unchanged code leaves it byte-identical).
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
HEADLINE_COMPARISONS = ("<=", ">=", "<", ">")  # a headline has a direction: the side of the null that is better
SIGNIFICANT_DIGITS = 6  # values are stored rounded, so float noise in the last bits does not churn records

REPRODUCED = "reproduced"
PARTLY = "partly"
NOT_SHOWN = "not shown at this scale"
CONTRADICTED = "contradicted"
VERDICTS = (REPRODUCED, PARTLY, NOT_SHOWN, CONTRADICTED)
# The seed verdicts compatible with each expected verdict: what one run accepts before the seeds are aggregated.
ACCEPTED = {
    REPRODUCED: {REPRODUCED},
    PARTLY: {REPRODUCED, PARTLY},
    NOT_SHOWN: {REPRODUCED, PARTLY, NOT_SHOWN, CONTRADICTED},  # mixed seeds; the aggregate must still say so
    CONTRADICTED: {CONTRADICTED},
}
REQUIRED_SEEDS = (0, 1, 2, 3, 4)  # "reproduced" means these five seeds held with margin


class ClaimFailed(AssertionError):
    """A mechanism claim failed, or a headline's verdict on this seed differs from the one the chapter expects."""


def _rounded(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    value = float(value)
    if not math.isfinite(value) or value == 0.0:
        return value
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def _number(value: Any) -> float:
    return float(value.item() if hasattr(value, "item") else value)


def mirrored_threshold(threshold: float, null: float) -> float:
    """The threshold reflected through the null: a ratio's in log space (null 1), a difference's linearly."""
    if null == 1.0:
        return 1.0 / threshold
    return 2.0 * null - threshold


def seed_verdict(measured: float, comparison: str, threshold: float, null: float) -> str:
    """The verdict of one seed's measurement (the rule of the module docstring)."""
    if not math.isfinite(measured):
        return NOT_SHOWN
    if COMPARISONS[comparison](measured, threshold):
        return REPRODUCED
    better = measured > null if comparison in (">", ">=") else measured < null
    if better:
        return PARTLY
    mirror = mirrored_threshold(threshold, null)
    worse = measured <= mirror if comparison in (">", ">=") else measured >= mirror
    return CONTRADICTED if worse else NOT_SHOWN


def aggregate_verdict(verdicts: list[str]) -> str:
    """The verdict across seeds (the rule of the module docstring)."""
    if not verdicts:
        raise ValueError("no seed verdicts to aggregate")
    if all(v == REPRODUCED for v in verdicts):
        return REPRODUCED
    if all(v == CONTRADICTED for v in verdicts):
        return CONTRADICTED
    if all(v in (REPRODUCED, PARTLY) for v in verdicts):
        return PARTLY
    return NOT_SHOWN


def _paper_text(paper: Any) -> str:
    if paper is None:
        return "-"
    return f"{paper:.4g}" if isinstance(paper, (int, float)) else str(paper)


@dataclass
class Mechanism:
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


@dataclass
class Headline:
    statement: str
    measured: float
    comparison: str
    threshold: float
    null: float
    baseline: str
    expect: str
    paper: Any = None
    label: str | None = None

    @property
    def verdict(self) -> str:
        return seed_verdict(self.measured, self.comparison, self.threshold, self.null)

    @property
    def as_expected(self) -> bool:
        return self.verdict in ACCEPTED[self.expect]

    def as_record(self) -> dict:
        return {"statement": self.statement, "label": self.label, "baseline": self.baseline,
                "measured": _rounded(self.measured), "comparison": self.comparison,
                "threshold": _rounded(self.threshold), "null": _rounded(self.null), "paper": _rounded(self.paper),
                "expect": self.expect, "verdict": self.verdict}


@dataclass
class Observation:
    name: str
    value: float

    def as_record(self) -> dict:
        return {"name": self.name, "value": _rounded(self.value)}


class Claims:
    """The claims of one chapter run (see the module docstring for the workflow and the verdict rule)."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.headlines: list[Headline] = []
        self.mechanisms: list[Mechanism] = []
        self.observations: list[Observation] = []

    def _new_statement(self, statement: str) -> None:
        if not statement or not statement.strip():
            raise ValueError("a claim needs a statement")
        taken = [c.statement for c in (*self.headlines, *self.mechanisms)] + [o.name for o in self.observations]
        if statement in taken:
            raise ValueError(f"claim registered twice: {statement!r}")

    def headline(self, statement: str, measured: Any, comparison: str, threshold: float, *, null: float,
                 baseline: str, expect: str, paper: Any = None, label: str | None = None) -> Headline:
        """The paper's comparison, its method against ``baseline``, as one measured number (see the module)."""
        self._new_statement(statement)
        if comparison not in HEADLINE_COMPARISONS:
            raise ValueError(f"a headline compares with one of {', '.join(HEADLINE_COMPARISONS)}, "
                             f"not {comparison!r}: it needs a better side of its null")
        if expect not in VERDICTS:
            raise ValueError(f"unknown expected verdict {expect!r}; accepted: {', '.join(VERDICTS)}")
        if not isinstance(baseline, str) or not baseline.strip():
            raise ValueError("a headline names its baseline: the paper's comparison, or the method without the "
                             "paper's ingredient")
        threshold, null = float(threshold), float(null)
        if not (threshold > null if comparison in (">", ">=") else threshold < null):
            raise ValueError(f"the threshold {threshold:g} must lie on the better side ({comparison}) of the null "
                             f"{null:g}")
        if null == 1.0 and threshold <= 0:
            raise ValueError("a ratio headline (null 1) needs a positive threshold")
        item = Headline(statement, _number(measured), comparison, threshold, null, baseline.strip(), expect,
                        paper, label)
        self.headlines.append(item)
        return item

    def mechanism(self, statement: str, measured: Any, comparison: str, threshold: float,
                  paper: Any = None) -> Mechanism:
        """A property of the method that must hold on every seed."""
        self._new_statement(statement)
        if comparison not in COMPARISONS:
            raise ValueError(f"unknown comparison {comparison!r}; accepted: {', '.join(COMPARISONS)}")
        item = Mechanism(statement, _number(measured), comparison, float(threshold), paper)
        self.mechanisms.append(item)
        return item

    def observe(self, name: str, value: Any) -> Observation:
        """A measured value the prose quotes: recorded and shown, never asserted."""
        self._new_statement(name)
        item = Observation(name, _number(value))
        self.observations.append(item)
        return item

    def table(self) -> str:
        """The claims with their numbers, as a plain-text table, one section per kind."""
        lines = []
        if self.headlines:
            lines.append(f"Headline claims\n{'measured':>12} {'':2} {'threshold':>10} {'null':>6} {'paper':>10}  "
                         f"{'verdict':24}  claim (baseline)")
            for h in self.headlines:
                lines.append(f"{h.measured:12.4g} {h.comparison:2} {h.threshold:10.4g} {h.null:6.3g} "
                             f"{_paper_text(h.paper):>10}  {h.verdict:24}  {h.statement} (vs {h.baseline})")
        if self.mechanisms:
            lines.append(f"{'' if not lines else chr(10)}Mechanism claims\n{'measured':>12} {'':2} {'threshold':>10} "
                         f"{'paper':>10}  verdict  claim")
            for m in self.mechanisms:
                lines.append(f"{m.measured:12.4g} {m.comparison:2} {m.threshold:10.4g} {_paper_text(m.paper):>10}  "
                             f"{'holds' if m.holds else 'FAILS':7}  {m.statement}")
        if self.observations:
            lines.append(f"{'' if not lines else chr(10)}Observations\n{'value':>12}  name")
            for o in self.observations:
                lines.append(f"{o.value:12.4g}  {o.name}")
        return "\n".join(lines)

    def show(self) -> None:
        print(self.table())

    def _this_seed(self) -> dict:
        return {"headlines": [_rounded(h.measured) for h in self.headlines],
                "verdicts": [h.verdict for h in self.headlines],
                "mechanisms": [_rounded(m.measured) for m in self.mechanisms],
                "holds": all(m.holds for m in self.mechanisms) and all(h.as_expected for h in self.headlines),
                "observations": [_rounded(o.value) for o in self.observations]}

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
        seeds: dict = {}
        main: dict | None = None
        if previous and previous.get("code_hash") == chapter_hash and chapter_hash is not None:
            seeds = dict(previous.get("seeds", {}))
            main = previous
        seeds[str(self.cfg.seed)] = self._this_seed()
        seeds = dict(sorted(seeds.items(), key=lambda kv: int(kv[0])))
        if main is None or self.cfg.seed == 0 or main.get("seed") != 0:
            main = {"seed": self.cfg.seed, "device": self.cfg.device.type, "versions": library_versions(),
                    "headlines": [h.as_record() for h in self.headlines],
                    "mechanisms": [m.as_record() for m in self.mechanisms],
                    "observations": [o.as_record() for o in self.observations]}
        return {"slug": self.cfg.slug, "scale": self.cfg.scale, "code_hash": chapter_hash, "seed": main["seed"],
                "device": main["device"], "versions": main["versions"],
                "verdicts": seeds_verdicts(seeds, len(self.headlines)),
                "headlines": main["headlines"], "mechanisms": main["mechanisms"],
                "observations": main["observations"], "seeds": seeds}

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

    def verdicts_text(self) -> str:
        """The expected headline verdicts in one line, for the chapter's card (each run checks its seed): the
        verdict alone for one headline; for several, each verdict with the headline's label or statement."""
        if len(self.headlines) == 1:
            return self.headlines[0].expect
        return "; ".join(f"{h.expect} ({h.label or h.statement})" for h in self.headlines)

    def check(self) -> None:
        """Write the record, print one verdict line per claim, glue the verdicts, raise on any failure."""
        if not self.headlines:
            raise ValueError("no headline claim registered: a chapter asserts the paper's own comparison")
        self.write()
        for h in self.headlines:
            mark = "✔" if h.as_expected else "✘"
            print(f"{mark} headline, expected {h.expect}, this seed {h.verdict}:  {h.statement}")
        for m in self.mechanisms:
            print(f"{'✔ holds' if m.holds else '✘ FAILS'}  {m.statement}")
        off = [h for h in self.headlines if not h.as_expected]
        failed = [m for m in self.mechanisms if not m.holds]
        print(f"{len(self.headlines) - len(off)} of {len(self.headlines)} headlines as expected, "
              f"{len(self.mechanisms) - len(failed)} of {len(self.mechanisms)} mechanism claims hold")
        _glue("headline_verdicts", self.verdicts_text())
        if off or failed:
            detail = [f"headline {h.statement!r}: measured {h.measured:.4g} gives {h.verdict!r} on seed "
                      f"{self.cfg.seed}, expected {h.expect!r}" for h in off]
            detail += [f"{m.statement}: measured {m.measured:.4g}, needed {m.comparison} {m.threshold:.4g}"
                       for m in failed]
            raise ClaimFailed("; ".join(detail))


def seeds_verdicts(seeds: dict, count: int) -> list[str]:
    """Each headline's verdict aggregated over the recorded seeds."""
    per_seed = [v.get("verdicts", []) for v in seeds.values()]
    return [aggregate_verdict([verdicts[i] for verdicts in per_seed if i < len(verdicts)]) for i in range(count)]


def _glue(name: str, text: str) -> None:
    """Glue a text for the page (myst-nb), quietly skipped where myst-nb is absent (e.g. a bare Colab)."""
    try:
        from myst_nb import glue
    except ImportError:
        return
    glue(name, text, display=False)


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
