"""No module of ``server`` imports itself back, through any chain: every import counts,
module-level, inside a function and under ``TYPE_CHECKING`` (grimp reads them all). The
layer contracts are import-linter's (``pyproject.toml``); import-linter has no contract for
"no cycle among all modules", so this test holds it."""

from __future__ import annotations

import grimp


def cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            module, targets = work[-1]
            target = next(targets, None)
            if target is not None:
                if target not in graph.modules:
                    continue
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    imported = graph.find_modules_directly_imported_by(target)
                    work.append((target, iter(sorted(imported))))
                elif target in on_stack:
                    low[module] = min(low[module], index[target])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[module])
            if low[module] == index[module]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == module:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found


def chain(graph: grimp.ImportGraph, group: list[str]) -> str:
    """One way round a group, for the failure message: a -> b -> ... -> a."""
    first, second = (
        group[0],
        next(m for m in graph.find_modules_directly_imported_by(group[0]) if m in group),
    )
    back = graph.find_shortest_chain(importer=second, imported=first) or (second, first)
    return " -> ".join((first, *back))


def test_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for module in ("p", "p.a", "p.b", "p.c"):
        graph.add_module(module)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.c")
    graph.add_import(importer="p.c", imported="p.a")
    assert cycles(graph) == [["p.a", "p.b", "p.c"]]
    assert chain(graph, ["p.a", "p.b", "p.c"]) == "p.a -> p.b -> p.c -> p.a"
    graph.remove_import(importer="p.c", imported="p.a")
    assert cycles(graph) == []


def test_no_module_cycles() -> None:
    graph = grimp.build_graph("server", cache_dir=None)
    found = cycles(graph)
    assert not found, "module cycles:\n" + "\n".join(chain(graph, g) for g in found)
