"""The house's rules, read from the code's imports (every import, in functions too):
- each package of shared/ imports only packages below it (core < media < pipeline < voices < service <
  jobs, live < api, cli), and jobs and live stay apart;
- no import circles between modules;
- shared/ never imports functions/, local_dev/ or tests; the serving harness at local_dev's root never
  imports its benchmarks or evaluation.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RANK = {"core": 0, "media": 1, "pipeline": 2, "voices": 3, "service": 4, "jobs": 5, "live": 5, "api": 6, "cli": 6}
PROJECT = ("shared", "functions", "local_dev", "images")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for top in PROJECT for p in (ROOT / top).rglob("*.py")}


def imports_of(path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules `path` imports (`from a.b import c` counts as a.b.c where that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module for a in node.names]
        else:
            continue
        found |= {n for n in names if n.split(".")[0] in PROJECT and n in known}
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(path, known) - {name} for name, path in known.items()}


def test_packages_of_shared_import_only_downwards():
    wrong = []
    for module, targets in graph().items():
        parts = module.split(".")
        if parts[0] != "shared":
            continue
        for target in targets:
            tparts = target.split(".")
            if tparts[0] != "shared":
                wrong.append(f"{module} -> {target} (shared imports outside itself)")
                continue
            if len(parts) < 2 or len(tparts) < 2 or parts[1] == tparts[1]:
                continue
            if parts[1] not in RANK or tparts[1] not in RANK:
                wrong.append(f"{module} -> {target} (a module of shared/ outside its packages)")
            elif RANK[tparts[1]] >= RANK[parts[1]]:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports that run up or sideways:\n" + "\n".join(sorted(wrong))


def test_no_import_circles():
    g = graph()
    state: dict[str, int] = {}
    circles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(g.get(node, ())):
            if state.get(nxt) == 1:
                circles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node, [node])
    assert not circles, "\n".join(circles)


def test_the_serving_harness_does_not_import_bench_or_eval():
    wrong = [f"{m} -> {t}" for m, ts in graph().items() for t in ts
             if m.startswith("local_dev.") and m.count(".") == 1 and t.startswith(("local_dev.bench", "local_dev.eval"))]
    assert not wrong, wrong


def test_the_rules_see_real_imports():
    """A check that reads no import would pass on anything: the flow's own imports must be seen."""
    g = graph()
    assert {"shared.pipeline.runner", "shared.pipeline.stages", "shared.core.domain"} <= g["shared.pipeline.flow"]
    assert "shared.pipeline.models" in g["shared.pipeline.runner"]
