"""The book as committed: every chapter in sync, current, listed, recorded and within its time budget."""
import warnings

import pytest

from perturb.harness import book, checks, reproductions

CHAPTERS = book.chapters()


def test_the_book_has_its_first_chapter():
    assert "crown-bound-propagation" in {ch.slug for ch in CHAPTERS}


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[ch.slug for ch in CHAPTERS])
def test_chapter_files_agree(chapter):
    problems = checks.chapter_problems(chapter, book.toc_docnames(chapter.root))
    assert not problems, "\n".join(problems)
    for warning in checks.chapter_warnings(chapter):  # shown in the test summary, not a failure
        warnings.warn(f"{chapter.slug}: {warning}")


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[ch.slug for ch in CHAPTERS])
def test_quick_run_time_within_budget(chapter):
    from perturb.harness.runner import stored_metadata

    runtime = stored_metadata(chapter).get("runtime_s")
    assert runtime is not None and runtime <= book.QUICK_LIMIT_S
    if runtime > book.QUICK_TARGET_S:
        warnings.warn(f"{chapter.slug}: quick run {runtime:.0f} s is over the {book.QUICK_TARGET_S:.0f} s target")


def test_book_level_checks_and_reproductions_page():
    root = book.require_root()
    assert reproductions.is_current(root), "run `python -m perturb reproductions`"
    general = checks.book_problems(root)["book"]
    assert not general, "\n".join(general)
