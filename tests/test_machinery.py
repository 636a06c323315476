"""The run / check / reproductions machinery, end to end, on a scratch checkout with one tiny chapter."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from perturb.harness import book, checks, reproductions, runner

HERE = Path(__file__).parent
SLUG = "local-lipschitz-bounds"  # any catalogue name will do; the chapter itself is the scratch fixture
TOC = f"""format: jb-book
root: book/intro
parts:
  - caption: Part
    chapters:
      - file: book/robustness/{SLUG}
"""


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkout")
    (root / "book/robustness").mkdir(parents=True)
    (root / "book/intro.md").write_text("# Intro\n")
    shutil.copy(HERE / "fixtures/scratch-chapter.md", root / f"book/robustness/{SLUG}.md")
    (root / "_toc.yml").write_text(TOC)
    (root / "_config.yml").write_text(f"exclude_patterns: ['{checks.PAIRED_MD_EXCLUDE}']\n")
    return root


@pytest.fixture(scope="module")
def chapter(checkout):
    for seed in (1, 2, 3, 4, 0):  # the five seeds every claim is checked on; seed 0 writes the notebook last
        run = runner.run_chapter(book.find_chapter(SLUG, checkout), seed=seed)
        assert run.ok, run.message
    reproductions.write(checkout)
    return book.find_chapter(SLUG, checkout)


def test_default_run_writes_the_committed_notebook_without_run_noise(chapter):
    nb = nbformat.read(chapter.ipynb, as_version=4)
    assert nb.metadata["perturb"]["code_hash"] == book.code_hash(chapter.md)
    assert "papermill" not in nb.metadata
    assert not any("injected-parameters" in book.cell_tags(c) for c in nb.cells)
    assert all("execution" not in c.metadata and "papermill" not in c.metadata for c in nb.cells)
    outputs = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "1 of 1 headlines as expected, 1 of 1 mechanism claims hold" in outputs


def test_rerun_with_unchanged_code_leaves_the_file_byte_identical(chapter):
    before = chapter.ipynb.read_bytes()
    assert runner.run_chapter(chapter).ok
    assert chapter.ipynb.read_bytes() == before


def test_other_seed_goes_to_runs_folder_and_adds_its_verdict(chapter, checkout):
    before = chapter.ipynb.read_bytes()
    result = runner.run_chapter(chapter, seed=1)
    assert result.ok and result.output == checkout / "_runs/quick-cpu-seed1/robustness" / f"{SLUG}.ipynb"
    assert chapter.ipynb.read_bytes() == before
    record = json.loads(chapter.result_path("quick").read_text())
    assert set(record["seeds"]) == {"0", "1", "2", "3", "4"} and record["seed"] == 0
    assert record["verdicts"] == ["reproduced"]
    assert all(seed["verdicts"] == ["reproduced"] and len(seed["headlines"]) == 1 for seed in record["seeds"].values())


def test_check_passes_then_catches_stale_outputs_and_unsynced_cells(chapter, checkout):
    reproductions.write(checkout)
    assert checks.book_problems(checkout) == {SLUG: [], "book": []}
    original = chapter.md.read_text()
    try:
        chapter.md.write_text(original.replace("# A scratch chapter", "# A scratch chapter, reworded"))
        problems = checks.book_problems(checkout)[SLUG]
        assert any("differ in their cells" in p for p in problems)
        assert not any("stale" in p for p in problems), "a prose edit must not make outputs stale"
        chapter.md.write_text(original.replace("threshold=2.0", "threshold=3.0"))
        assert any("stale" in p for p in checks.book_problems(checkout)[SLUG])
    finally:
        chapter.md.write_text(original)


def test_a_failing_run_leaves_committed_files_untouched(chapter, checkout):
    original = chapter.md.read_text()
    notebook, record = chapter.ipynb.read_bytes(), chapter.result_path("quick").read_bytes()
    try:
        chapter.md.write_text(original.replace("claims.show()", "raise RuntimeError('boom')"))
        result = runner.run_chapter(chapter)
        assert not result.ok and "boom" in result.message
        assert result.output == checkout / "_runs/failed" / f"{SLUG}.ipynb"
    finally:
        chapter.md.write_text(original)
    assert chapter.ipynb.read_bytes() == notebook and chapter.result_path("quick").read_bytes() == record


def test_a_failing_claim_leaves_the_record_as_it_was(chapter, checkout):
    # The claims cell writes the record before it raises; the runner puts the committed record back.
    original = chapter.md.read_text()
    notebook, record = chapter.ipynb.read_bytes(), chapter.result_path("quick").read_bytes()
    try:
        chapter.md.write_text(original.replace('threshold=2.0)', 'threshold=0.01)'))
        result = runner.run_chapter(chapter)
        assert not result.ok and "variance is below two" in result.message
    finally:
        chapter.md.write_text(original)
    assert chapter.ipynb.read_bytes() == notebook and chapter.result_path("quick").read_bytes() == record


def test_reproductions_page_lists_the_claim_and_detects_drift(chapter, checkout):
    reproductions.write(checkout)
    page = (checkout / reproductions.PAGE).read_text()
    assert "variance is below two" in page and "1 reproduced" in page and f"{{doc}}`robustness/{SLUG}`" in page
    assert reproductions.is_current(checkout)
    path = chapter.result_path("quick")
    saved = path.read_text()
    try:
        drifted = json.loads(saved)
        drifted["seeds"]["1"]["headlines"] = [9.0]
        path.write_text(json.dumps(drifted))
        assert not reproductions.is_current(checkout)
    finally:
        path.write_text(saved)


def test_missing_toc_entry_and_parameters_cell_are_reported(chapter, checkout):
    toc = (checkout / "_toc.yml").read_text()
    original = chapter.md.read_text()
    try:
        (checkout / "_toc.yml").write_text(toc.replace(f"      - file: book/robustness/{SLUG}\n", "      []\n"))
        chapter.md.write_text(original.replace(":tags: [parameters]\n", ""))
        problems = checks.chapter_problems(chapter, book.toc_docnames(checkout))
        assert any("not in _toc.yml" in p for p in problems)
        assert any("parameters" in p for p in problems)
    finally:
        (checkout / "_toc.yml").write_text(toc)
        chapter.md.write_text(original)


def cli(checkout, *args):
    return subprocess.run([sys.executable, "-m", "perturb", *args], cwd=checkout, capture_output=True, text=True)


@pytest.mark.parametrize("args, message", [
    (("run", "no-such-chapter"), "unknown chapter 'no-such-chapter'"),
    (("run", "dpm-solver-pp"), "planned but not written yet"),
    (("run", "--part", "poetry"), "invalid choice: 'poetry'"),
    (("run", SLUG, "--scale", "huge"), "invalid choice: 'huge'"),
    (("run", SLUG, "--device", "tpu"), "invalid choice: 'tpu'"),
    (("run", SLUG, "--seed", "1.5"), "non-negative integer"),
    (("run", SLUG, "--seeds", "4-1"), "runs upwards"),
    (("run", SLUG, "--seeds", "0-x"), "non-negative integer"),
])
def test_cli_refuses_bad_input_with_what_is_accepted(checkout, args, message):
    done = cli(checkout, *args)
    assert done.returncode == 2 and message in done.stderr


def test_cli_list_shows_the_chapter_and_its_verdict(chapter, checkout):
    done = cli(checkout, "list")
    assert done.returncode == 0 and SLUG in done.stdout and "reproduced (0, 1, 2, 3, 4)" in done.stdout


@pytest.fixture
def saved_record(chapter):
    path = chapter.result_path("quick")
    saved = path.read_text()
    yield path, json.loads(saved)
    path.write_text(saved)


def _problems(chapter):
    return checks.record_problems(chapter)


def test_record_rules_pass_the_good_chapter(chapter):
    assert _problems(chapter) == []


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.update(headlines=[], verdicts=[]), "holds no headline claim"),
    (lambda r: r["headlines"][0].update(baseline=" "), "names no baseline"),
    (lambda r: r["seeds"].pop("3"), "lacks seeds 3"),
    (lambda r: r["seeds"]["2"].update(verdicts=["partly"]), "expects 'reproduced' but seed(s) 2 gave partly"),
    (lambda r: r["headlines"][0].update(expect="partly"), "aggregate to 'reproduced'"),
    (lambda r: r["mechanisms"][0].update(threshold=100.0), "lies more than 10x"),
    (lambda r: r["headlines"][0].update(threshold=0.01, null=0.0), "lies more than 10x"),
    (lambda r: r["seeds"]["4"].update(mechanisms=[5.0]), "fails on seed(s) 4"),
    (lambda r: r.update(code_hash="0" * 16), "written by other code"),
])
def test_record_rules_fire_on_a_bad_record(chapter, saved_record, edit, message):
    path, record = saved_record
    edit(record)
    path.write_text(json.dumps(record))
    problems = _problems(chapter)
    assert any(message in p for p in problems), problems


def test_a_zero_count_is_exempt_from_the_threshold_factor(chapter, saved_record):
    path, record = saved_record
    record["mechanisms"][0].update(comparison="==", threshold=0.0)
    for seed in record["seeds"].values():
        seed["mechanisms"] = [0.0]
    path.write_text(json.dumps(record))
    assert _problems(chapter) == []


def test_prose_numbers_the_run_does_not_show_are_warned_about(chapter):
    original = chapter.md.read_text()
    record = json.loads(chapter.result_path("quick").read_text())
    shown = record["headlines"][0]["measured"]
    assert checks.chapter_warnings(chapter) == []
    try:
        chapter.md.write_text(original.replace(
            "Some math $x^2$", f"Some math $x^2 = 0.5$, in 2024, with n = 200 and a variance of {shown:.2f}; "
                               f"the paper reports 0.77. We typed 0.4321 here"))
        warnings = checks.chapter_warnings(chapter)
        assert len(warnings) == 1 and "0.4321" in warnings[0] and f"{shown:.2f}" not in warnings[0]
        assert "0.77" not in warnings[0] and "0.5" not in warnings[0]
    finally:
        chapter.md.write_text(original)
