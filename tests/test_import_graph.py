"""The package's import graph: a ladder without cycles, figures as leaves, a light root.

The graph is read from the source with ``ast`` (every ``import`` of a companion module,
at module level or inside a function), so a cycle hidden in a function body counts too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "companion"
# modules that draw or interact: the library never imports them
LEAVES = {"companion.plots", "companion.diagrams", "companion.widgets", "companion.cli", "companion.__main__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, name: str) -> set[str]:
    """The companion modules ``path`` imports (resolved to module names)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("companion"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if not target.startswith("companion"):
                continue
            found.add(target)
            # "from companion import model" imports a module, not a name
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                if candidate in ALL_MODULES:
                    found.add(candidate)
    return {m for m in found if m in ALL_MODULES and m != name}


SOURCES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
ALL_MODULES = set(SOURCES)
# the package roots re-export lazily or for convenience; the ladder is about modules
ROOTS = {"companion", "companion.tokenizers", "companion.finetune", "companion.runs"}
GRAPH = {
    name: {m for m in imports_of(path, name) if m not in ROOTS}
    for name, path in SOURCES.items()
    if name not in ROOTS
}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_is_read_correctly() -> None:
    # known edges, so that the checks below cannot pass on an empty graph
    assert "companion.model" in GRAPH["companion.train"] or "companion.losses" in GRAPH["companion.train"]
    assert "companion.history" in GRAPH["companion.checkpoint"]
    assert "companion.course_models" in GRAPH["companion.cli"]
    assert "companion.finetune.classification" in GRAPH["companion.runs.classify"]


def reachable(name: str) -> set[str]:
    """Every companion module ``name`` imports, directly or through others."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        for nxt in GRAPH.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


# the fine-tuning components: data, losses, tasks and layers, no whole runs
FINETUNE_COMPONENTS = sorted(name for name in SOURCES
                             if name.startswith(("companion.finetune.", "companion.align.")))
# what a whole run is made of, and what the components may not reach
RUNS_AND_ABOVE = {"companion.course_models", "companion.cli", "companion.chat"} | {
    name for name in SOURCES if name.startswith("companion.runs")
}


def test_the_finetune_components_are_the_six_expected() -> None:
    assert FINETUNE_COMPONENTS == ["companion.align.dpo", "companion.align.grpo",
                                   "companion.finetune.classification", "companion.finetune.instruction",
                                   "companion.finetune.lora", "companion.finetune.tasks"]


@pytest.mark.parametrize("component", FINETUNE_COMPONENTS)
def test_finetune_components_do_not_import_the_registry_or_the_runs(component: str) -> None:
    """The ladder: components (data, losses, model, train) -> runs -> course models -> cli.

    A fine-tuning component imports neither the course-model registry nor a whole run nor
    the command line, directly or through another module."""
    assert reachable(component) & RUNS_AND_ABOVE == set(), sorted(reachable(component) & RUNS_AND_ABOVE)


def test_every_fine_tuning_run_loads_its_base_model_one_way() -> None:
    for run in ("companion.runs.classify", "companion.runs.instruct", "companion.runs.dpo", "companion.runs.grpo"):
        assert "companion.runs.base" in GRAPH[run], run
        assert "companion.runs.common" in reachable(run), run
    # a task recipe's base is a pretrained course model, which the registry loads; the one loader
    # knows the task recipes in turn, so a fine-tuned model can be the base of a further run
    assert "companion.runs.task_model" in GRAPH["companion.runs.base"]
    assert "companion.runs.base" not in reachable("companion.runs.task_model")
    # the registry sits between pretraining and the fine-tuning runs
    assert "companion.runs.pretrain" in GRAPH["companion.course_models"]
    assert reachable("companion.runs.pretrain").isdisjoint({"companion.course_models", "companion.runs.base"})


def test_find_cycle_finds_a_planted_cycle() -> None:
    planted = {**GRAPH, "companion.model": {*GRAPH["companion.model"], "companion.train"}}
    cycle = find_cycle(planted)
    assert cycle is not None and cycle[0] == cycle[-1]


def test_no_import_cycles() -> None:
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("leaf", sorted(LEAVES))
def test_library_modules_do_not_import_figures_or_the_command_line(leaf: str) -> None:
    importers = sorted(name for name, deps in GRAPH.items() if leaf in deps and name not in LEAVES)
    assert importers == [], f"{leaf} is imported by library modules {importers}"


def test_importing_the_tokenizers_does_not_load_the_training_stack() -> None:
    code = (
        "import sys\n"
        "from companion.tokenizers import SimpleTokenizer\n"
        "import companion\n"
        "heavy = sorted(m for m in ('companion.train', 'companion.checkpoint', "
        "'companion.course_models', 'safetensors') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"loaded eagerly: {result.stdout.strip()}"


def test_every_subpackage_is_in_the_wheel() -> None:
    """pyproject.toml names the packages explicitly (a flat layout): a new subpackage left out
    would be missing from an installed copy (Colab, CI's second run)."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(init.parent.relative_to(root).parts) for init in (root / "companion").rglob("__init__.py")}
    assert found - listed == set(), f"add {sorted(found - listed)} to [tool.setuptools] packages in pyproject.toml"
