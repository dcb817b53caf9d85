"""The README's snippets that say they are files: one that names a shipped file is that file, word
for word; one that names a test is run, in a fresh project holding the shipped files it uses."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from typing import Dict

from conftest import ROOT

#: A fenced Python block whose first line is ``# path``.
SNIPPET = re.compile(r"```python\n# (?P<path>[\w./-]+\.py)\n(?P<body>.*?)```", re.S)


def snippets() -> Dict[str, str]:
    return {m["path"]: m["body"] for m in SNIPPET.finditer((ROOT / "README.md").read_text())}


def test_snippets_named_after_shipped_files_are_those_files():
    shipped = {path: body for path, body in snippets().items() if (ROOT / path).exists()}
    assert "tasks/vacuum.py" in shipped
    for path, body in shipped.items():
        assert body == (ROOT / path).read_text(), f"README.md's {path} differs from the file"


def test_test_snippets_pass_on_the_shipped_files(tmp_path):
    tests = {path: body for path, body in snippets().items() if path.startswith("tests/")}
    assert tests, "the README shows no test"
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
    assert f"{len(tests)} passed" in done.stdout
