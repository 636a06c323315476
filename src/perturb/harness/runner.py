"""Execute chapters with papermill, from their ``.md`` source, and store the outputs without churn.

The ``.md`` is the only source. A run converts it to a notebook, executes it with the given parameters and, at
the defaults (quick scale, CPU, seed 0), writes the executed notebook over the committed ``.ipynb``; any other
parameters write to the ignored ``_runs/`` folder, so the committed notebook only ever shows the default run.
A failed run leaves every committed file as it was and keeps its partial notebook in ``_runs/failed/``.
"""
from __future__ import annotations

import copy
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat

from . import book
from .config import resolve_device, validate_scale, validate_seed

RUNS_DIR = "_runs"
KEEP_RUNTIME_TOLERANCE = 0.25  # a re-run within 25% (or 3 s) of the stored time keeps the stored time


@dataclass
class RunResult:
    chapter: book.Chapter
    ok: bool
    runtime_s: float
    output: Path
    message: str = ""


def is_default_run(scale: str, device: str, seed: int) -> bool:
    return scale == "quick" and seed == 0 and resolve_device(device).type == "cpu"


def parameters_for(scale: str, device: str, seed: int) -> dict:
    """Only the parameters that differ from the chapter's defaults are injected."""
    wanted = {"SCALE": scale, "DEVICE": device, "SEED": seed}
    if is_default_run(scale, device, seed):
        return {}
    return {k: v for k, v in wanted.items() if v != book.DEFAULT_PARAMETERS[k]}


def source_notebook(chapter: book.Chapter) -> nbformat.NotebookNode:
    nb = book.read_md_notebook(chapter.md)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    return nb


def clean_executed(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop what papermill adds that varies from run to run: timings, injected cell, run metadata."""
    nb = copy.deepcopy(nb)
    nb.cells = [c for c in nb.cells if "injected-parameters" not in book.cell_tags(c)]
    nb.metadata.pop("papermill", None)
    for index, cell in enumerate(nb.cells):
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if cell.metadata.get("tags") == []:
            cell.metadata.pop("tags")
        cell["id"] = f"cell-{index}"  # stable ids: the same source gives the same file
    return nb


def outputs_of(nb) -> list:
    return [c.get("outputs", []) for c in nb.cells if c.cell_type == "code"]


def output_path(chapter: book.Chapter, scale: str, device: str, seed: int) -> Path:
    if is_default_run(scale, device, seed):
        return chapter.ipynb
    resolved = resolve_device(device).type
    return chapter.root / RUNS_DIR / f"{scale}-{resolved}-seed{seed}" / chapter.part / f"{chapter.slug}.ipynb"


def run_chapter(chapter: book.Chapter, scale: str = "quick", device: str = "auto", seed: int = 0) -> RunResult:
    import papermill

    scale, seed = validate_scale(scale), validate_seed(seed)
    resolve_device(device)  # refuse a bad device before spending any time
    nb = source_notebook(chapter)
    target = output_path(chapter, scale, device, seed)
    code_hash = book.code_hash(chapter.md)
    record = chapter.result_path(scale)
    record_before = record.read_bytes() if record.exists() else None  # the claims cell writes it mid-run
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / f"{chapter.slug}.ipynb"
        executed = Path(tmp) / f"{chapter.slug}.out.ipynb"
        nbformat.write(nb, source)
        start = time.perf_counter()
        try:
            papermill.execute_notebook(str(source), str(executed), parameters=parameters_for(scale, device, seed),
                                       cwd=str(chapter.md.parent), kernel_name="python3", progress_bar=False,
                                       report_mode=False)
        except Exception as err:  # noqa: BLE001 - any failure must leave committed files untouched
            runtime = time.perf_counter() - start
            if record_before is None:
                record.unlink(missing_ok=True)
            else:
                record.write_bytes(record_before)
            failed = chapter.root / RUNS_DIR / "failed" / f"{chapter.slug}.ipynb"
            failed.parent.mkdir(parents=True, exist_ok=True)
            if executed.exists():
                failed.write_text(executed.read_text())
            message = str(err).strip().splitlines()
            summary = next((line for line in reversed(message) if line.strip()), type(err).__name__)
            return RunResult(chapter, False, runtime, failed, summary)
        runtime = time.perf_counter() - start
        result = clean_executed(nbformat.read(executed, as_version=4))
    runtime = round(runtime, 1)
    if target.exists():
        previous = nbformat.read(target, as_version=4)
        old = previous.metadata.get("perturb", {})
        old_time = old.get("runtime_s")
        if (old.get("code_hash") == code_hash and outputs_of(previous) == outputs_of(result)
                and old_time is not None and abs(runtime - old_time) <= max(3.0, KEEP_RUNTIME_TOLERANCE * old_time)):
            runtime = old_time
    result.metadata["perturb"] = {"code_hash": code_hash, "runtime_s": runtime, "scale": scale, "seed": seed,
                                  "device": resolve_device(device).type}
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(result, target)
    return RunResult(chapter, True, runtime, target)


def stored_metadata(chapter: book.Chapter) -> dict:
    if not chapter.ipynb.exists():
        return {}
    return json.loads(chapter.ipynb.read_text()).get("metadata", {}).get("perturb", {})
