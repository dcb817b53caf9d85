"""The options table of the docs is the one the options' declaration generates, word for word."""

from __future__ import annotations

import re
from pathlib import Path

from epics_bridge.service.options import markdown_table

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
TABLE = re.compile(r"<!-- options-table:start -->\n(?P<table>.*?)\n<!-- options-table:end -->", re.S)


def test_the_options_table_of_the_docs_is_the_declarations():
    found = TABLE.findall(OPERATIONS.read_text())
    assert len(found) == 1, "docs/operations.md holds one options table between its two markers"
    assert found[0] == markdown_table(), (
        "docs/operations.md's options table differs from the declaration; paste the output of "
        "python -c 'from epics_bridge.service.options import markdown_table; print(markdown_table())'"
    )
