"""The book's command line: ``python -m perturb list | run | check | reproductions``.

    python -m perturb list
    python -m perturb run crown-bound-propagation            # default: quick, CPU, seed 0 -> committed .ipynb
    python -m perturb run --part robustness --seed 1         # other seeds/scales -> _runs/, seed verdict recorded
    python -m perturb run crown-bound-propagation --seeds 0-4   # the five seeds every claim is checked on
    python -m perturb run --stale                            # every chapter whose stored outputs are out of date
    python -m perturb run --all --scale full --device cuda   # the GPU run; writes results/full/
    python -m perturb check                                  # sync, staleness, table of contents, records, claims
"""
from __future__ import annotations

import argparse
import json
import sys

from . import book, reproductions
from .catalog import PAPERS_BY_SLUG, PARTS
from .claims import seeds_verdicts
from .config import DEVICES, SCALES, ConfigError, resolve_device, validate_seed


class UsageError(Exception):
    pass


def _seed(text: str) -> int:
    try:
        return validate_seed(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _seed_list(text: str) -> list[int]:
    """``3``, ``0-4`` or ``0,2,5``: the seeds to run, each a non-negative integer."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("-")
            first, last = validate_seed(low), validate_seed(high) if high else validate_seed(low)
            if last < first:
                raise ConfigError(f"a seed range runs upwards, got {part!r}")
            seeds += [s for s in range(first, last + 1) if s not in seeds]
    except ConfigError as err:
        raise argparse.ArgumentTypeError(f"{err} (--seeds takes e.g. 3, 0-4 or 0,2,5)") from None
    return seeds


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m perturb", description="Run and check the chapters of Perturb.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every written chapter with its part, last quick run time, device and verdict")
    run = sub.add_parser("run", help="execute chapters from their .md sources with papermill")
    which = run.add_mutually_exclusive_group(required=True)
    which.add_argument("slugs", nargs="*", default=[], metavar="SLUG", help="chapter names (see `list`)")
    which.add_argument("--part", choices=list(PARTS), metavar="PART", help=f"one part: {', '.join(PARTS)}")
    which.add_argument("--all", action="store_true", help="every written chapter")
    which.add_argument("--stale", action="store_true", help="chapters whose stored outputs are out of date")
    run.add_argument("--scale", default="quick", choices=SCALES, help="quick (CPU, ~30 s) or full (GPU)")
    run.add_argument("--device", default="auto", choices=DEVICES, help="auto picks CUDA when present")
    seeds = run.add_mutually_exclusive_group()
    seeds.add_argument("--seed", default=0, type=_seed, help="a non-negative integer (default 0)")
    seeds.add_argument("--seeds", type=_seed_list, metavar="SEEDS",
                       help="several seeds, e.g. 0-4 (the default seed 0 runs last, so it writes the notebook last)")
    sub.add_parser("check", help="fail when a chapter's files are out of sync, stale or unlisted, or its claims "
                                 "fall short of the book's rules (prose numbers no run shows are warnings)")
    sub.add_parser("reproductions", help="regenerate book/reproductions.md from results/")
    return parser


def _selected(args, root) -> list[book.Chapter]:
    written = book.chapters(root)
    if args.all:
        return written
    if args.part:
        return [ch for ch in written if ch.part == args.part]
    if args.stale:
        from .checks import chapter_problems
        toc = book.toc_docnames(root)
        return [ch for ch in written if any("stale" in p or "differ" in p or "no paired" in p
                                            for p in chapter_problems(ch, toc))]
    chosen = []
    for slug in args.slugs:
        try:
            chosen.append(book.find_chapter(slug, root))
        except KeyError as err:
            raise UsageError(err.args[0]) from None
    return chosen


def cmd_list(root) -> int:
    from .runner import stored_metadata

    written = book.chapters(root)
    print(f"{'chapter':40} {'part':17} {'quick run':>9}  {'device':6}  headline verdicts (seeds)")
    for ch in written:
        meta = stored_metadata(ch)
        record = ch.result_path("quick")
        verdict = "no record"
        if record.exists():
            data = json.loads(record.read_text())
            seeds = data.get("seeds", {})
            verdicts = seeds_verdicts(seeds, len(data.get("headlines", [])))
            verdict = f"{'; '.join(verdicts) or 'no headline'} ({', '.join(seeds) or 'no seed'})"
        runtime = f"{meta['runtime_s']:.1f} s" if meta.get("runtime_s") is not None else "–"
        print(f"{ch.slug:40} {ch.part:17} {runtime:>9}  {meta.get('device', '–'):6}  {verdict}")
    print(f"\n{len(written)} of {len(PAPERS_BY_SLUG)} chapters written.")
    return 0


def cmd_run(args, root) -> int:
    from .runner import run_chapter

    try:
        resolve_device(args.device)  # `--device cuda` without a GPU fails before anything runs
    except ConfigError as err:
        raise UsageError(str(err)) from None
    chosen = _selected(args, root)
    if not chosen:
        print("nothing to run")
        return 0
    seeds = args.seeds or [args.seed]
    if 0 in seeds:  # seed 0 last: its run writes the committed notebook after the other seeds' records
        seeds = [s for s in seeds if s != 0] + [0]
    jobs = [(chapter, seed) for chapter in chosen for seed in seeds]
    failures = 0
    for i, (chapter, seed) in enumerate(jobs, 1):
        print(f"[{i}/{len(jobs)}] {chapter.slug} ({args.scale}, {args.device}, seed {seed}) ...", flush=True)
        result = run_chapter(chapter, args.scale, args.device, seed)
        where = result.output.relative_to(root)
        if result.ok:
            print(f"      done in {result.runtime_s:.1f} s -> {where}", flush=True)
        else:
            failures += 1
            print(f"      FAILED after {result.runtime_s:.1f} s: {result.message}\n"
                  f"      committed files untouched; partial notebook in {where}", flush=True)
    reproductions.write(root)
    print(f"{len(jobs) - failures} of {len(jobs)} runs succeeded; book/reproductions.md refreshed")
    return 1 if failures else 0


def cmd_check(root) -> int:
    from .checks import book_problems, chapter_warnings

    for chapter in book.chapters(root):
        for warning in chapter_warnings(chapter):
            print(f"{chapter.slug}: warning: {warning}")
    problems = book_problems(root)
    bad = {name: items for name, items in problems.items() if items}
    for name, items in bad.items():
        for item in items:
            print(f"{name}: {item}")
    chapters = len(problems) - 1
    if bad:
        print(f"check failed: {sum(map(len, bad.values()))} problem(s)")
        return 1
    print(f"check passed: {chapters} chapter(s) in sync, current and listed")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        root = book.require_root()
        if args.command == "list":
            return cmd_list(root)
        if args.command == "run":
            return cmd_run(args, root)
        if args.command == "check":
            return cmd_check(root)
        if args.command == "reproductions":
            print(f"wrote {reproductions.write(root).relative_to(root)}")
            return 0
    except (UsageError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
