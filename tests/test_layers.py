"""The package's layers, in a strict order: each module imports only its own unit and the units below it.

From the bottom: the base (files, the tidy results format, the environment registry without
gymnasium), the plan (config, schema, the DAG, disk, provenance, the run lock), the agents (training,
with their checkpoints), the analysis, and the command line. Every import counts, those inside
functions too; the exceptions below each say why.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from replication.io import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "replication"

# Units from the bottom up: a unit is a subpackage or a top-level module.
ORDER = (
    "replication.io",
    "replication.imports",
    "replication.runinfo",
    "replication.envspecs",
    "replication.tidy",
    "replication.plan",
    "replication.agents",
    "replication.analysis",
    "replication.gpucheck",
    "replication.study",
    "replication.cli",
    "replication.__main__",
)
BASE, PLAN = ORDER[: ORDER.index("replication.plan")], "replication.plan"

# (importing unit, imported unit): why the import goes up or sideways. None today.
EXCEPTIONS: dict[tuple[str, str], str] = {}

# What the workflow must not import to build its DAG: the training and plotting libraries.
HEAVY = ("gymnasium", "torch", "matplotlib", "seaborn", "d3rlpy", "stable_baselines3", "pandas")


def module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit(module: str) -> str:
    """The unit of ``module``: the longest entry of ORDER that is it or contains it."""
    matches = [u for u in ORDER if module == u or module.startswith(u + ".")]
    assert matches, f"{module} belongs to no layer: add it to ORDER in tests/test_layers.py"
    return max(matches, key=len)


def imported(path: Path) -> set[str]:
    """Every module of the package that ``path`` imports, anywhere in it (functions included)."""
    module, found = module_name(path), set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([base] if base else [])])
            found |= {f"{base}.{alias.name}" for alias in node.names} | {base}
    return {name for name in found if name == "replication" or name.startswith("replication.")}


def violations() -> list[str]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = unit(module_name(path))
        for name in sorted(imported(path)):
            if name == "replication":
                continue
            target = unit(name)  # `from replication.io import x` gives replication.io.x: the unit of io
            if ORDER.index(target) > ORDER.index(source) and (source, target) not in EXCEPTIONS:
                out.append(f"{module_name(path)} imports {name}: {source} is below {target}")
    return out


def test_every_import_goes_down_the_layers() -> None:
    assert not violations(), "\n".join(violations())


def test_every_exception_is_still_needed() -> None:
    pairs = set()
    for path in PACKAGE.rglob("*.py"):
        pairs |= {(unit(module_name(path)), unit(name)) for name in imported(path) if name != "replication"}
    assert not set(EXCEPTIONS) - pairs, f"exceptions no module needs: {set(EXCEPTIONS) - pairs}"


def workflow_imports() -> list[str]:
    """The package modules the Snakefile and its rules import."""
    files = [PROJECT_ROOT / "Snakefile", *sorted((PROJECT_ROOT / "rules").glob("*.smk"))]
    pattern = re.compile(r"^\s*(?:from\s+(replication[\w.]*)\s+import\s+([\w, ]+)|import\s+(replication[\w.]*))", re.M)
    names = []
    for match in pattern.finditer("\n".join(f.read_text() for f in files)):
        if match[3]:
            names.append(match[3])
            continue
        for name in (n.strip() for n in match[2].split(",")):
            submodule = f"{match[1]}.{name}"
            is_module = (PROJECT_ROOT / (submodule.replace(".", "/") + ".py")).exists()
            names.append(submodule if is_module else match[1])
    return names


def test_the_workflow_imports_only_the_plan_layer() -> None:
    names = workflow_imports()
    assert "replication.plan.plan" in names
    above = [n for n in names if ORDER.index(unit(n)) > ORDER.index(PLAN)]
    assert not above, f"the Snakefile or its rules import above the plan layer: {above}"


def test_building_the_dag_imports_no_training_or_plotting_library() -> None:
    """What the Snakefile imports, a config resolved, its plan built with its tables, figures and disk
    check: none of gymnasium, torch, matplotlib, seaborn (nor d3rlpy, SB3, pandas) is loaded."""
    code = f"""
import importlib, sys
for name in {sorted(set(workflow_imports()))!r}:
    importlib.import_module(name)
from replication.plan import config, disk
from replication.plan.plan import Plan
cfg = config.load("config/paper.yaml")
plan = Plan.build(cfg)
assert plan.tables and plan.figures and plan.jobs
disk.check_free_space(cfg, "results/paper", 2, plan.grid())
print(" ".join(sorted(m for m in {HEAVY!r} if m in sys.modules)))
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "", f"building the DAG imported {result.stdout.strip()}"


def test_the_base_layer_imports_no_training_or_plotting_library() -> None:
    """The base layer (the tidy format reads and writes pandas frames) loads no gymnasium, torch or plotting."""
    heavy = tuple(m for m in HEAVY if m != "pandas")
    code = f"import importlib, sys\nfor m in {list(BASE)!r}: importlib.import_module(m)\n"
    code += f"print(' '.join(m for m in {heavy!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout + result.stderr[-3000:]
