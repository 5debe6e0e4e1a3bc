"""requirements.txt names every package the app imports directly, not only those that happen to come along."""
import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Import name -> the name pip knows it by, where they differ.
PACKAGES = {"markdown_it": "markdown-it-py", "mistral_common": "mistral-common", "google": "protobuf"}
PROVIDED = {"spaces"}  # Hugging Face Spaces' own package, there only; the app runs without it


def imported(paths) -> set[str]:
    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"starling_demo", "__future__"} - PROVIDED


def test_every_package_the_app_imports_is_required_with_a_floor_where_it_was_missing():
    required = {re.split(r"[<>=\[ ;#]", line.strip())[0].lower(): line
                for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.startswith("#")}
    modules = imported([ROOT / "app.py", *(ROOT / "starling_demo").rglob("*.py")])
    assert [m for m in sorted(modules) if PACKAGES.get(m, m).lower().replace("_", "-") not in
            {name.replace("_", "-") for name in required}] == []
    for package in ("httpx", "numpy", "starlette", "tokenizers", "tqdm"):  # those that came only through others
        assert ">=" in required[package]
