"""The upper floors know no kind (docs/architecture.md): cli, serve, inspect and export ask the
run's task. Their generic modules neither import a kind's task or model class nor compare
anything with a kind's name; each kind's own floor modules (named by its task's ``floors``) are
where kind-specific code lives. import-linter checks the imports too (pyproject.toml). Also the
dependency rules the backends' routing table (tests/test_routing.py) relies on."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import rnnlab
from rnnlab.tasks import TASKS, Floors, load_attribute

SRC = Path(rnnlab.__file__).parent
FLOORS = ("cli", "serve", "inspect", "export")
# what a generic floor module may not import: the kinds' task modules and model classes
KIND_MODULES = ("rnnlab.models", "rnnlab.nn.language_model", "rnnlab.nn.seq2seq") + tuple(
    task.__module__ for task in TASKS.values()
)
KIND_CLASSES = {task.__name__ for task in TASKS.values()} | {
    "SequenceClassifier",
    "TextClassifier",
    "LanguageModel",
    "Seq2Seq",
}


def kind_floor_modules() -> set[str]:
    """The modules the tasks name as their own floors (exempt: they are the kind's code)."""
    modules = set()
    for task in TASKS.values():
        for spec in (task.floors.serve, task.floors.inspect, task.floors.export):
            if spec:
                modules.add(spec.partition(":")[0])
    return modules


def generic_modules() -> list[tuple[str, Path]]:
    exempt = kind_floor_modules()
    out = []
    for floor in FLOORS:
        for path in sorted((SRC / floor).rglob("*.py")):
            parts = path.relative_to(SRC.parent).with_suffix("").parts
            name = ".".join(p for p in parts if p != "__init__")
            if name not in exempt:
                out.append((name, path))
    return out


def violations(tree: ast.AST) -> list[str]:
    found = []
    kinds = set(TASKS)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith(KIND_MODULES):
                found.append(f"line {node.lineno}: imports {node.module}")
            found += [
                f"line {node.lineno}: imports {a.name}"
                for a in node.names
                if a.name in KIND_CLASSES
            ]
        elif isinstance(node, ast.Import):
            found += [
                f"line {node.lineno}: imports {a.name}"
                for a in node.names
                if a.name.startswith(KIND_MODULES)
            ]
        elif isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            for operand in operands:
                values = (
                    operand.elts
                    if isinstance(operand, (ast.Tuple, ast.List, ast.Set))
                    else [operand]
                )
                for value in values:
                    if isinstance(value, ast.Constant) and value.value in kinds:
                        found.append(f"line {node.lineno}: compares with kind {value.value!r}")
    return found


def test_the_floors_have_generic_modules_to_check():
    names = [name for name, _ in generic_modules()]
    for expected in (
        "rnnlab.serve.app",
        "rnnlab.serve.models",
        "rnnlab.inspect.cli",
        "rnnlab.export.api",
        "rnnlab.cli.commands",
        "rnnlab.cli.main",
    ):
        assert expected in names


@pytest.mark.parametrize("name,path", generic_modules(), ids=lambda v: str(v))
def test_generic_floor_modules_name_no_kind(name, path):
    assert violations(ast.parse(path.read_text("utf-8"))) == [], name


def test_the_check_catches_what_it_should():
    bad = ast.parse(
        "from rnnlab.tasks.language_model import LanguageModelTask\n"
        "from rnnlab.models import SequenceClassifier\n"
        "import rnnlab.nn.language_model\n"
        "if config.model.kind == 'lm': pass\n"
        "if kind in ('text', 'other'): pass\n"
    )
    assert len(violations(bad)) == 7  # two per import-from line: the module and the class


def test_every_kind_declares_its_floors_and_they_load():
    for kind, task in TASKS.items():
        assert task.kind == kind and isinstance(task.floors, Floors)
        for floor in ("serve", "inspect", "export"):
            spec = getattr(task.floors, floor)
            if spec:
                assert load_attribute(spec) is not None, (kind, floor)
        served = load_attribute(task.floors.serve)
        assert served.analyses and served.page and served.title, kind


def test_a_floor_a_kind_does_not_offer_is_a_clear_error():
    task = object.__new__(TASKS["lm"])
    task.kind, task.floors = "plain", Floors(verbs=(), reads="text")  # a kind with no floors
    with pytest.raises(ValueError, match="expected a run whose kind offers it, got a 'plain'"):
        task.floor("serve")
    with pytest.raises(ValueError, match="predict expected a run whose kind offers it"):
        task.check_verb("predict", "RUN")


# -- the dependency rules the routing table relies on --------------------------------------------
def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {f"{node.module}.{alias.name}" for alias in node.names} | {node.module}
    return found


def test_fused_is_pure_torch_and_layers_pick_no_kernel() -> None:
    """fused.py never touches the C++ kernels; layers.py never imports interop (interop imports
    it) and reaches the backends only through the dispatcher."""
    fused_imports = imported_modules(SRC / "nn" / "backends" / "fused.py")
    assert not any("compiled" in m or "_ext" in m for m in fused_imports), fused_imports
    layers = SRC / "nn" / "layers.py"
    layer_imports = imported_modules(layers)
    assert not any("interop" in m for m in layer_imports), layer_imports
    backend_imports = {m for m in layer_imports if m.startswith("rnnlab.nn.backends")}
    allowed = {"rnnlab.nn.backends"} | {
        f"rnnlab.nn.backends.{name}" for name in ("BACKENDS", "Backend", "Precision")
    }
    assert backend_imports <= allowed, backend_imports
    used = {
        node.attr
        for node in ast.walk(ast.parse(layers.read_text()))
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "backends"
    }
    assert used == {"scan_layer", "scan_stack", "resolve_backend", "autocast_input"}, used
