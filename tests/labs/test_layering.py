"""Arrows point down only: explainer -> labs -> proxy. labs never imports explainer."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imports_of(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module" \
                and node.args and isinstance(node.args[0], ast.Constant):
            found.append((node.lineno, str(node.args[0].value)))
    return found


def test_no_module_under_labs_imports_explainer():
    offenders = [f"{path.relative_to(ROOT)}:{line} imports {name}"
                 for path in sorted((ROOT / "labs").rglob("*.py"))
                 for line, name in imports_of(path)
                 if name == "explainer" or name.startswith("explainer.")]
    assert offenders == [], "labs must not import explainer:\n" + "\n".join(offenders)


def test_the_lab_runner_and_graders_load_without_explainer():
    # Import them in a fresh interpreter with explainer made unimportable: nothing breaks.
    code = ("import sys; sys.modules['explainer'] = None\n"
            "import labs.framework.runner, labs.framework.grading, labs.sandbox.admin_client\n"
            "import labs.diagrams\n"
            "assert labs.framework.grading.request_sequence is not None\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
