"""The house rules of koala/ (docs/adding-a-model.md): lower layers never import higher ones,
no library module reads flags, no module over 600 lines, import koala stays cheap."""

import ast
import pathlib
import subprocess
import sys

import pytest

KOALA = pathlib.Path(__file__).resolve().parent.parent / "koala"

# layer -> the koala packages it must not import
FORBIDDEN = {
    "core": ("koala.tasks", "koala.cli", "koala.registry"),
    "ops": ("koala.tasks", "koala.cli", "koala.registry", "koala.data"),
    "data": ("koala.tasks", "koala.cli", "koala.registry"),
    "tasks": ("koala.cli",),
}


def _imports(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def _modules(layer: str):
    return sorted((KOALA / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_lower_layers_import_no_higher_ones(layer):
    bad = []
    for path in _modules(layer):
        for name in _imports(path):
            if name.startswith(FORBIDDEN[layer]):
                bad.append(f"{path.relative_to(KOALA)} imports {name}")
    assert not bad, bad


def test_no_library_module_reads_flags():
    library = [p for p in KOALA.rglob("*.py") if "cli" not in p.relative_to(KOALA).parts
               and p.parent != KOALA]
    assert len(library) > 30
    bad = [str(p.relative_to(KOALA)) for p in library
           if "absl.flags" in _imports(p) or "absl" in _imports(p) and "flags" in p.read_text()
           and "from absl import flags" in p.read_text()]
    assert not bad, bad


def test_no_module_is_over_600_lines():
    sizes = {str(p.relative_to(KOALA)): len(p.read_text().splitlines())
             for p in KOALA.rglob("*.py")}
    assert max(sizes.values()) <= 600, {k: v for k, v in sizes.items() if v > 600}


def test_import_koala_and_the_configs_import_no_tensorflow():
    code = ("import sys, koala, koala.cli.common, koala.core.run_config, "
            "koala.tasks.colorize.config, koala.tasks.sr.config, koala.tasks.codec.config\n"
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "[]"
