"""The snippets of the README and of the docs that say they are files: one that names a shipped file
is that file, word for word; one that names a test is run, in a fresh project holding the shipped
files it uses. And the README stays a front door: at most 250 lines."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

#: The repository (not ``conftest.ROOT``: run beside tests/unit, ``conftest`` may name its conftest).
ROOT = Path(__file__).resolve().parents[1]
#: A fenced Python block whose first line is ``# path``.
SNIPPET = re.compile(r"```python\n# (?P<path>[\w./-]+\.py)\n(?P<body>.*?)```", re.S)
#: Where snippets live: the README and every page of the docs.
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def found() -> List[Tuple[Path, str, str]]:
    """Every file-naming snippet: (page, path it names, body)."""
    return [(page, m["path"], m["body"]) for page in PAGES for m in SNIPPET.finditer(page.read_text())]


def snippets() -> Dict[str, str]:
    bodies: Dict[str, str] = {}
    for page, path, body in found():
        assert bodies.setdefault(path, body) == body, f"{page.name} shows {path} unlike another page does"
    return bodies


def test_snippets_named_after_shipped_files_are_those_files():
    shipped = {path: body for path, body in snippets().items() if (ROOT / path).exists()}
    assert "tasks/vacuum.py" in shipped
    for path, body in shipped.items():
        assert body == (ROOT / path).read_text(), f"the docs' {path} differs from the file"


def test_test_snippets_pass_on_the_shipped_files(tmp_path):
    tests = {path: body for path, body in snippets().items() if path.startswith("tests/")}
    assert {"tests/test_vacuum.py", "tests/test_motor.py"} <= set(tests), "the README and docs/testing.md show tests"
    shutil.copytree(ROOT / "tasks", tmp_path / "tasks")
    shutil.copytree(ROOT / "db", tmp_path / "db")
    (tmp_path / "pytest.ini").write_text("[pytest]\npythonpath = .\n")
    for path, body in tests.items():
        (tmp_path / path).parent.mkdir(exist_ok=True)
        (tmp_path / path).write_text(body)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("EPICS_PVA", "PYTEST_"))}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        cwd=tmp_path,
        env=clean,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    tests_run = sum(body.count("\ndef test_") for body in tests.values())
    assert f"{tests_run} passed" in done.stdout


def test_the_readme_is_a_front_door_of_at_most_250_lines():
    lines = len((ROOT / "README.md").read_text().splitlines())
    assert lines <= 250, f"README.md has {lines} lines: move the detail to docs/"


def test_the_readmes_links_reach_files_of_the_repository():
    """The docs' own links are checked by ``mkdocs build --strict``; the README is not one of its pages."""
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", (ROOT / "README.md").read_text())
    missing = [link for link in links if not (ROOT / link).is_file()]
    assert links and not missing, f"README.md links to what the repository does not hold: {missing}"
