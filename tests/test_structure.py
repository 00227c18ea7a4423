"""The package's shape (README, "Layout"), checked on the source: imports run one way with no
cycle (imports inside functions count), no library module imports a command, no module is
longer than 400 lines and no function longer than 80.

A command is a module with a `__main__` block (predict.py, evaluate.py, ...), or cli.py, which
only the commands use."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / 'retinanet_jax'
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 80


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob('*.py'))}
TREES = {name: ast.parse(path.read_text()) for name, path in MODULES.items()}


def imported_modules(name: str) -> set[str]:
    """The package's modules that `name` imports, anywhere in it (functions included)."""
    package = name if MODULES[name].name == '__init__.py' else name.rpartition('.')[0]
    found = set()
    for node in ast.walk(TREES[name]):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                parts = package.split('.')[: len(package.split('.')) - node.level + 1]
                base = '.'.join(parts + ([node.module] if node.module else []))
            targets = [f'{base}.{a.name}' for a in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition('.')[0]
            if target and target != name:
                found.add(target)
    # `from retinanet_jax.data import x` names both the package and the module: keep the module.
    return {m for m in found if not any(o.startswith(m + '.') for o in found)} or found


GRAPH = {name: imported_modules(name) for name in MODULES}


def is_command(name: str) -> bool:
    if name == 'retinanet_jax.commands.cli':
        return True
    for node in TREES[name].body:
        if isinstance(node, ast.If) and '__main__' in ast.unparse(node.test):
            return True
    return False


def test_the_checks_see_the_package():
    assert {'retinanet_jax.training.trainer', 'retinanet_jax.data.pipeline'} <= set(MODULES)
    assert 'retinanet_jax.ops.nms' in GRAPH['retinanet_jax.ops.postprocess']
    assert is_command('retinanet_jax.commands.predict') and not is_command(
        'retinanet_jax.inference.predictor'
    )


def test_no_import_cycle():
    cycles, done, path = [], set(), []

    def visit(name):
        if name in path:
            cycles.append([*path[path.index(name) :], name])
            return
        if name in done:
            return
        path.append(name)
        for other in sorted(GRAPH[name]):
            visit(other)
        path.pop()
        done.add(name)

    for name in MODULES:
        visit(name)
    assert not cycles, '\n'.join(' -> '.join(c) for c in cycles)


def test_no_library_module_imports_a_command():
    wrong = [
        f'{name} imports {other}'
        for name, others in GRAPH.items()
        if not is_command(name)
        for other in sorted(others)
        if is_command(other)
    ]
    assert not wrong, wrong


@pytest.mark.parametrize('name', sorted(MODULES))
def test_short_modules_and_functions(name):
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f'{name}: {lines} lines'
    long = [
        f'{node.name} ({node.end_lineno - node.lineno + 1} lines)'
        for node in ast.walk(TREES[name])
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f'{name}: {long}'
