"""The layout's promises: each name defined once, dev/test support out of the operator's imports,
and no module of the operator holding state outside its context."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from gismo import contract
from gismo_operator import constants, registry

OPERATOR = Path(__file__).resolve().parents[2] / "operator"

#: Calls that make an empty container at module level: state waiting to be filled at run time.
CONTAINER_CALLS = ("dict", "list", "set", "defaultdict", "WeakKeyDictionary", "WeakValueDictionary")


def _targets(node: ast.stmt) -> list[ast.expr]:
    if isinstance(node, ast.Assign):
        return list(node.targets)
    return [node.target] if isinstance(node, ast.AnnAssign) else []


def _defined_names(path: Path) -> set[str]:
    """Names ``path`` spells a value out for (not imported ones, nor aliases of another name)."""
    tree = ast.parse(path.read_text())
    spelled = (ast.Constant, ast.JoinedStr)
    return {
        t.id
        for node in tree.body
        if isinstance(getattr(node, "value", None), spelled)
        for t in _targets(node)
        if isinstance(t, ast.Name)
    }


def _names() -> dict[str, str]:
    """Every string defined in gismo.contract and gismo_operator.constants: value -> where."""
    out: dict[str, str] = {}
    sources = ((contract, Path(contract.__file__)), (constants, OPERATOR / "gismo_operator" / "constants.py"))
    for module, path in sources:
        for name in sorted(_defined_names(path)):
            value = getattr(module, name)
            if name.isupper() and isinstance(value, str):
                out.setdefault(value, f"{module.__name__}.{name}")
    return out


def _literals(tree: ast.AST) -> list[ast.Constant]:
    """String literals of a module, minus docstrings and the arguments of ``Literal[...]`` (a type
    must spell its values out)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            skip.add(id(body[0].value))
        if isinstance(node, ast.Subscript) and getattr(node.value, "id", None) == "Literal":
            skip.update(id(n) for n in ast.walk(node.slice))
    strings = [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    return [n for n in strings if id(n) not in skip]


def test_no_name_of_the_contract_or_the_constants_is_spelled_out_elsewhere() -> None:
    names = _names()
    assert "gismo.io/pool" in names and "GismoPoolInUse" in names and "mutate-raypod" in names
    found = [
        f"{path.relative_to(OPERATOR)}:{node.lineno}: {node.value!r} is {names[node.value]}"
        for path in sorted(OPERATOR.rglob("*.py"))
        if path.name != "constants.py"
        for node in _literals(ast.parse(path.read_text()))
        if node.value in names
    ]
    assert not found, "use the named constant:\n" + "\n".join(found)


def test_event_reasons_all_start_with_gismo() -> None:
    reasons = {k: v for k, v in vars(constants).items() if k.startswith("REASON_")}
    assert len(reasons) >= 14
    assert all(isinstance(v, str) and v.startswith("Gismo") for v in reasons.values()), reasons


def test_the_operator_never_imports_its_dev_and_test_support() -> None:
    """What the operator image runs (``python -m gismo_operator`` with every handler module)
    imports neither gismo_operator.testing nor the demo, nor kmock and ray (not in the image)."""
    code = (
        "import sys, gismo_operator.__main__, gismo_operator.registry as r\n"
        "r.load_handlers()\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('kmock', 'ray', 'gismo_demo')"
        " or n.startswith('gismo_operator.testing'))\n"
        "print(bad)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert out.stdout.strip() == "[]", out.stdout
    assert "gismo_operator.handlers.raypods" in registry.HANDLER_MODULES


def test_no_module_level_mutable_state_outside_the_context_slot() -> None:
    """Module-level containers made empty to be filled at run time (``{}``, ``[]``, ``set()``,
    ``defaultdict(...)``, weak dictionaries) and ``global`` statements: only the two documented
    ones (the context slot, and the fast-admission table that decorators fill at import, like
    kopf's registry). Non-empty literals are constant tables, not state."""
    allowed = {("context.py", "_current"), ("kopf_overrides.py", "_fast_admissions")}
    found: list[str] = []
    for path in sorted((OPERATOR / "gismo_operator").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
            empty = (isinstance(value, ast.Dict) and not value.keys) or (
                isinstance(value, (ast.List, ast.Set)) and not value.elts
            )
            made = isinstance(value, ast.Call) and (
                getattr(value.func, "id", None) in CONTAINER_CALLS
                or getattr(value.func, "attr", None) in CONTAINER_CALLS
            )
            for target in _targets(node):
                name = getattr(target, "id", "")
                if (empty or made) and (path.name, name) not in allowed:
                    found.append(f"{path.name}: {name}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Global):
                found += [f"{path.name}: global {n}" for n in node.names if (path.name, n) not in allowed]
    assert not found, found
