import textwrap

import pytest

from perturb.harness import notebook_code

CHAPTER = textwrap.dedent('''\
    ---
    jupytext:
      formats: ipynb,md:myst
      text_representation:
        extension: .md
        format_name: myst
    kernelspec:
      display_name: Python 3
      language: python
      name: python3
    ---

    # A chapter

    ```{code-cell} ipython3
    :tags: [method]

    from dataclasses import dataclass

    @dataclass
    class Interval:
        lower: float
        upper: float

        def width(self):
            return self.upper - self.lower
    ```

    ```{code-cell} ipython3
    experiment_result = Interval(0, 1).width()
    ```
    ''')


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    (tmp_path / "book/robustness").mkdir(parents=True)
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/intro\n")
    (tmp_path / "book/robustness/local-lipschitz-bounds.md").write_text(CHAPTER)
    monkeypatch.setenv("PERTURB_ROOT", str(tmp_path))
    return tmp_path


def test_load_method_runs_only_method_cells_and_supports_dataclasses(checkout):
    module = notebook_code.load_method("local-lipschitz-bounds")
    assert module.Interval(1.0, 3.5).width() == 2.5
    assert not hasattr(module, "experiment_result")


def test_load_method_refuses_a_chapter_without_method_cells(checkout):
    with pytest.raises(LookupError, match="no code cell tagged 'nothing'"):
        notebook_code.load_method("local-lipschitz-bounds", tag="nothing")
