"""The checkout's research projects (projects/) stand outside rnnlab and use its public API."""

import ast
import importlib
import importlib.util
from pathlib import Path

PROJECTS = Path(__file__).resolve().parents[1] / "projects"
# rnnlab's public faces: the package, its data package, and the utility modules the projects'
# command lines share with rnnlab's own (atomic files, versions, allocator, floating-point modes,
# kernel build)
PUBLIC = ("rnnlab", "rnnlab.data", "rnnlab.files", "rnnlab.checkpoint", "rnnlab.allocator")
PUBLIC += ("rnnlab.denormals", "rnnlab.cli.kernels", "rnnlab.nn.registry", "rnnlab.argtypes")


def _rnnlab_imports():
    for path in sorted(PROJECTS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "rnnlab":
                yield path.relative_to(PROJECTS), node.module, [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "rnnlab":
                        yield path.relative_to(PROJECTS), alias.name, []


def test_projects_import_only_rnnlab_s_public_names():
    seen = list(_rnnlab_imports())
    assert len(seen) >= 8  # the walk found the imports (experiments, reports, command lines)
    for where, module, names in seen:
        assert module in PUBLIC, f"{where}: imports {module}, not one of {PUBLIC}"
        exported = importlib.import_module(module).__all__
        for name in names:
            assert name in exported, f"{where}: {name} is not in {module}.__all__"


def test_the_package_has_no_experiments_left():
    src = Path(__file__).resolve().parents[1] / "src" / "rnnlab"
    assert not (src / "experiments").exists()
    assert importlib.util.find_spec("projects.long_range") is not None
