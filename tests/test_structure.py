"""The package's shape (README, "Layout"), checked on the source: imports run one way, by layer
(ops <- models <- data <- inference / evaluation / training <- commands, with no cycle between
subpackages), no cycle between modules (imports inside functions count), no library module
imports a command, no module is longer than 400 lines and no function longer than 80.

A command is a module of retinanet_jax/commands/, or retinanet_jax/__main__.py. The few
cross-cutting modules at the top have layers of their own (TOP)."""

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
    return name.startswith('retinanet_jax.commands') or name == 'retinanet_jax.__main__'


# Each subpackage's layer: a module may import its own subpackage and those of lower layers;
# those of one layer may import each other as long as no cycle forms between subpackages.
LAYERS = {
    'ops': 0,
    'models': 1,
    'data': 2,
    'inference': 3,
    'evaluation': 3,
    'training': 3,
    'testing': 3,
    'commands': 4,
}
# The cross-cutting modules at the top, and their layers: the base ones (-1) import nothing of
# the package but each other, and anything may import them; checkpoint reads model directories
# (models, 1); settings is the one translation of a run's config into every part's settings
# (data's, ops', models', and the config classes of training and evaluation: 3).
BASE = -1
TOP = {
    'retinanet_jax': BASE,
    'retinanet_jax.errors': BASE,
    'retinanet_jax.compiler_options': BASE,
    'retinanet_jax.compilation_cache': BASE,
    'retinanet_jax.sharding': BASE,
    'retinanet_jax.visualize': BASE,
    'retinanet_jax.checkpoint': 1,
    'retinanet_jax.settings': 3,
    'retinanet_jax.__main__': 4,
}


def group(name: str) -> str:
    """A module's subpackage (e.g. 'ops'), or the module itself where it is at the top."""
    return name if name in TOP else name.split('.')[1]


def layer(name: str) -> int:
    if name in TOP:
        return TOP[name]
    return LAYERS[name.split('.')[1]]


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Imports against the layers: upward, from a base module into the package, or forming a
    cycle between subpackages."""
    wrong = []
    for name, others in graph.items():
        for other in sorted(others):
            if layer(other) > layer(name) or (layer(name) == BASE and layer(other) != BASE):
                wrong.append(f'{name} (layer {layer(name)}) imports {other} (layer {layer(other)})')
    edges = {}
    for name, others in graph.items():
        for other in others:
            if name not in TOP and other not in TOP and group(name) != group(other):
                edges.setdefault(group(name), set()).add(group(other))
    for a, targets in edges.items():
        for b in targets:
            if a in reachable(edges, b):
                wrong.append(
                    f'subpackages {a} and {b} import each other (through {b} -> ... -> {a})'
                )
    return wrong


def reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_checks_see_the_package():
    assert {'retinanet_jax.training.trainer', 'retinanet_jax.data.pipeline'} <= set(MODULES)
    assert 'retinanet_jax.ops.nms' in GRAPH['retinanet_jax.ops.postprocess']
    assert is_command('retinanet_jax.commands.predict') and not is_command(
        'retinanet_jax.inference.predictor'
    )
    # every module has a layer: a new subpackage or top-level module is placed on purpose
    assert all(isinstance(layer(name), int) for name in MODULES)


def test_imports_follow_the_layers():
    assert not layer_violations(GRAPH), '\n'.join(layer_violations(GRAPH))


@pytest.mark.parametrize(
    'importer, imported',
    [
        ('retinanet_jax.ops.boxes', 'retinanet_jax.training.loop'),  # upward
        ('retinanet_jax.models.fpn', 'retinanet_jax.data.pipeline'),  # upward
        ('retinanet_jax.inference.predictor', 'retinanet_jax.training.step'),  # a peer cycle
        ('retinanet_jax.sharding', 'retinanet_jax.ops.boxes'),  # a base module into the package
        ('retinanet_jax.training.hooks', 'retinanet_jax.commands.train'),  # a command
    ],
)
def test_the_layer_check_catches_an_import_added_by_hand(importer, imported):
    graph = {name: set(others) for name, others in GRAPH.items()}
    graph[importer].add(imported)
    assert any(imported in v or 'import each other' in v for v in layer_violations(graph))


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
