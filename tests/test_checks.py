from perturb.harness import checks


def test_duplicate_equation_labels_across_pages_are_reported(tmp_path):
    (tmp_path / "book/a").mkdir(parents=True)
    (tmp_path / "book/a/one.md").write_text("$$\nx\n$$ (eq-shared)\n\n$$\ny\n$$ (eq-one-only)\n")
    (tmp_path / "book/a/two.md").write_text("```{math}\n:label: eq-shared\nz\n```\n")
    problems = checks.duplicate_equation_labels(tmp_path)
    assert len(problems) == 1 and "'eq-shared'" in problems[0] and "one.md" in problems[0]


def test_unique_labels_pass(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "book/one.md").write_text("$$\nx\n$$ (eq-a)\n\nsee {eq}`eq-a`\n")
    assert checks.duplicate_equation_labels(tmp_path) == []
