"""The package's imports go one way: no module imports another that (directly or not) imports it.

grimp (import-linter's graph builder) reads every import statement, function-local and
TYPE_CHECKING ones included, so a lazy import that reaches up is still a circle here. The layer
order itself is import-linter's contract in pyproject.toml (``lint-imports``, run by .ci/run).
"""

from __future__ import annotations

from typing import Dict, List, Set

import grimp


def circles(graph: grimp.ImportGraph) -> List[List[str]]:
    """Every set of modules that import each other in a circle (Tarjan's strongly connected components)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in graph.find_modules_directly_imported_by(module):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_module_of_the_package_takes_part_in_an_import_circle():
    graph = grimp.build_graph("epics_bridge", cache_dir=None)
    assert circles(graph) == []


def test_the_check_finds_a_circle():
    graph = grimp.ImportGraph()
    for module in ("pkg", "pkg.a", "pkg.b", "pkg.c"):
        graph.add_module(module)
    graph.add_import(importer="pkg.a", imported="pkg.b")
    graph.add_import(importer="pkg.b", imported="pkg.c")
    graph.add_import(importer="pkg.c", imported="pkg.a")
    assert circles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]
