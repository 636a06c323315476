"""Load a chapter's own method into Python, so tests can check it against an independent implementation.

A chapter's method lives in the chapter, where the reader sees it. Code cells tagged ``method`` must be
self-contained (imports plus definitions, no experiment): :func:`load_method` executes exactly those cells, in
order, into a fresh module, so ``tests/`` can import e.g. the CROWN chapter's ``ibp_bounds`` and compare it
with another library, without copying the chapter's code.
"""
from __future__ import annotations

import sys
import types

from . import book

METHOD_TAG = "method"


def load_method(slug: str, tag: str = METHOD_TAG) -> types.ModuleType:
    chapter = book.find_chapter(slug)
    nb = book.read_md_notebook(chapter.md)
    cells = [c for c in nb.cells if c.cell_type == "code" and tag in book.cell_tags(c)]
    if not cells:
        raise LookupError(f"chapter {slug!r} has no code cell tagged {tag!r}")
    module = types.ModuleType(f"perturb_chapter_{slug.replace('-', '_')}")
    module.__file__ = str(chapter.md)
    # Registered before running, as an import would be: dataclasses and pickling look classes up there.
    sys.modules[module.__name__] = module
    for cell in cells:
        # dont_inherit: the chapter's cells must not pick up this file's `from __future__` flags.
        exec(compile(cell.source, f"{chapter.md}#{tag}", "exec", dont_inherit=True), module.__dict__)
    return module
