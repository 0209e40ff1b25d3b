"""The test tree itself: pytest imports test modules by their file name (the folders have
no __init__.py), so two test files with one name break collection of the whole tier."""

from __future__ import annotations

from collections import Counter

from helpers import REPO


def test_every_test_module_has_its_own_file_name():
    names = Counter(path.name for path in (REPO / "tests").rglob("test_*.py"))
    assert [name for name, count in names.items() if count > 1] == []
