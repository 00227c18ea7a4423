"""The documentation is tested: what README.md, CONTRIBUTING.md, BENCHMARKS.md and docs/ show a
reader works.

- Every command line of a ```bash block (continuation lines joined, comments dropped) is known:
  this project's commands (train.py, python -m retinanet_jax / retinanet-jax <command>,
  python -m bench <name>) parse against the command's own flags, a --config among them loaded
  with its overrides and turned into settings, exactly as the command would before its work;
  each command shown also answers --help. Other programs (pip, git, tfds, ...) are named in
  OTHER_PROGRAMS, and the files they are given exist.
- Every `--config.key=value` written anywhere (in prose too) parses on the shipped configs named
  in its paragraph, or on every shipped config where none is named.
- docs/config.md lists every key of settings.default_config() and no other, with the right
  defaults; docs/commands.md lists every command and exactly its flags.
- Every ```python snippet runs: a config file's get_config() gives settings; other snippets run
  in a folder with the files they name (the smoke run as /tmp/shapes, a picture as photo.jpg).
  A snippet marked `<!-- snippet: NAME ... -->` needs a heavier fixture, and the test that has
  one runs it (CLAIMS; helpers.doc_snippet).
Everything runs in this process: parsing is milliseconds, and the snippets share the smoke
model's compiled programs.
"""

import ast
import contextlib
import importlib
import io
import math
import re
import shlex

import pytest

from configs import coco, coco_scratch, shapes, smoke, voc
from retinanet_jax import settings as settings_lib
from retinanet_jax.commands import COMMANDS, command
from retinanet_jax.errors import UserError

from .helpers import DOCS, ROOT, doc_blocks, doc_snippet

SHIPPED = {
    f'configs/{m.__name__.split(".")[-1]}.py': m for m in (coco, coco_scratch, voc, shapes, smoke)
}
# Programs the docs may show besides this project's, and how their arguments are checked.
OTHER_PROGRAMS = {'pip', 'git', 'cd', 'python3', 'source', 'tensorboard', 'tfds', 'ruff', 'bash'}
# Snippets run elsewhere, with the fixture they need: name -> the test module that runs it.
CLAIMS = {
    'onnxruntime': 'test_export.py',
    'torchvision_weights': 'test_commands.py',
}
# An issue number, a commit hash (hex with a letter and a digit) or a date.
HISTORY = re.compile(
    r'\bissues? #?\d|\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}\b|\b20\d\d-\d\d-\d\d\b'
)
OVERRIDE = re.compile(r"--config\.([A-Za-z_][\w.]*)(=('[^']*'|\"[^\"]*\"|[^\s`)\],;]+))?")


def command_lines():
    """(file, line number, tokens) of every command line in a bash block of the docs."""
    for path, lang, body, line, _ in doc_blocks():
        if lang not in ('bash', 'sh', 'shell'):
            continue
        text = body.replace('\\\n', ' ')
        for offset, raw in enumerate(text.splitlines()):
            tokens = shlex.split(raw, comments=True)
            while tokens and re.fullmatch(r'[A-Z_]+=.*', tokens[0]):  # VAR=value command
                tokens = tokens[1:]
            if tokens:
                yield f'{path.relative_to(ROOT)}:{line + offset}', tokens


def resolve(tokens: list[str]):
    """(command module, argv) of one of this project's commands, ('main', argv) for python -m
    retinanet_jax's own help, ('bench', args), or (None, tokens) for another program."""
    if tokens[:2] == ['python', 'train.py']:
        return importlib.import_module('retinanet_jax.commands.train'), ['train.py', *tokens[2:]]
    for prefix in (['python', '-m', 'retinanet_jax'], ['retinanet-jax']):
        if tokens[: len(prefix)] == prefix:
            rest = tokens[len(prefix) :]
            if not rest or rest[0].startswith('-'):
                return 'main', rest
            assert rest[0] in COMMANDS, f'no command {rest[0]!r}'
            module = importlib.import_module(f'retinanet_jax.commands.{rest[0]}')
            return module, [rest[0], *rest[1:]]
    if tokens[:3] == ['python', '-m', 'bench']:
        return 'bench', tokens[3:]
    return None, tokens


def parse(module, argv: list[str]):
    """The command's flags parsed from argv (command.parse), a --config turned into settings.
    A config file of the reader's own outside configs/ (my_config.py) is read as
    configs/shapes.py; one in configs/ must be there."""
    argv = [
        '--config=configs/shapes.py'
        if a.startswith('--config=')
        and not a.startswith('--config=configs/')
        and not (ROOT / a[9:]).is_file()
        else a
        for a in argv
    ]
    fv = command.parse(module, argv)
    if 'config' in fv and fv.config is not None:
        settings_lib.from_config(fv.config)
    return fv


def test_every_documented_command_parses_and_answers_help(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    from bench.__main__ import make_parser

    seen, failures = set(), []
    for where, tokens in command_lines():
        module, argv = resolve(tokens)
        try:
            if module == 'main':
                assert argv in ([], ['--help']), f'python -m retinanet_jax {argv}'
            elif module == 'bench':
                make_parser().parse_args(argv)
            elif module is not None and any(a in command.HELP for a in argv):
                seen.add(module)
            elif module is not None:
                parse(module, argv)
                seen.add(module)
            elif tokens[:3] == ['python', '-m', 'pytest'] or tokens[:2] == ['python', '-m']:
                name = tokens[2].replace('.', '/')
                assert (ROOT / f'{name}.py').is_file() or tokens[2] == 'pytest', tokens[2]
            elif tokens[0] == 'python' and tokens[1].endswith('detect.py'):
                fmt = tokens[tokens.index('--format') + 1] if '--format' in tokens else 'onnx'
                assert fmt in ('onnx', 'stablehlo'), fmt
            else:
                check_other_program(tokens)
        except (AssertionError, UserError, SystemExit) as e:
            failures.append(f'{where}: {shlex.join(tokens)}\n    {e}')
    assert not failures, 'documented commands that fail:\n' + '\n'.join(failures)
    for module in seen:  # each command shown starts: its --help
        assert command.run(module, [module.__name__, '--help'], 'x') == 0
    assert 'flags:' in capsys.readouterr().out


def check_other_program(tokens: list[str]) -> None:
    assert tokens[0] in OTHER_PROGRAMS, f'unknown program {tokens[0]!r} (tests/test_docs.py)'
    if tokens[0] == 'pip':
        for i, t in enumerate(tokens):
            if t == '-r':
                assert (ROOT / tokens[i + 1]).is_file(), tokens[i + 1]
    if tokens[0] == 'bash':
        assert (ROOT / tokens[1]).is_file(), tokens[1]


def paragraphs():
    """(file, paragraph text) of the docs outside their bash blocks (whose command lines
    test_every_documented_command_parses_and_answers_help parses whole)."""
    for path in DOCS:
        text = re.sub(r'^```(bash|sh|shell)\n.*?^```', '', path.read_text(), flags=re.M | re.S)
        yield from ((path, p) for p in re.split(r'\n\s*\n', text))


def test_every_documented_override_parses_on_the_configs_it_is_shown_with(monkeypatch):
    """The overrides of a paragraph together (they are shown together: a canvas with its long
    side), on each shipped config the paragraph names, or on all of them."""
    monkeypatch.chdir(ROOT)
    failures, count = [], 0
    for path, paragraph in paragraphs():
        named = [c for c in SHIPPED if c in paragraph] or list(SHIPPED)
        overrides = {}
        for match in OVERRIDE.finditer(paragraph):
            key, value = match.group(1).rstrip('.'), match.group(3)
            if key != 'key':  # the syntax itself: --config.key=value
                overrides[key] = shlex.split(value)[0] if value else None
        count += len(overrides)
        for config in named if overrides else ():
            try:
                check_overrides(config, overrides)
            except (AssertionError, UserError) as e:
                failures.append(f'{path.name}: {sorted(overrides)} on {config}: {e}')
    assert count > 30, count  # the extraction finds them
    assert not failures, 'documented overrides that fail:\n' + '\n'.join(failures)


def check_overrides(config: str, overrides: dict) -> None:
    """--config.key=value for each (key, value) parses on `config` and gives settings; a key
    without a value (named in prose) exists."""
    keys = command.config_keys(SHIPPED[config].get_config())
    for key, value in overrides.items():
        assert value is not None or key in keys, f'no key {key}'
    argv = ['train.py', '--workdir=/tmp/x', f'--config={config}']
    argv += [f'--config.{k}={v}' for k, v in overrides.items() if v is not None]
    parse(importlib.import_module('retinanet_jax.commands.train'), argv)


def test_the_failing_long_runs_flags_are_caught():
    """The docs' check of an override fails where a shipped config lacks the key."""
    with pytest.raises(
        UserError, match=r'no key data\.on_bad_recrd; the nearest known key: data\.on_bad_record'
    ):
        check_overrides('configs/coco.py', {'data.on_bad_recrd': 'skip'})
    with pytest.raises(AssertionError, match='no key'):
        check_overrides('configs/shapes.py', {'data.options.data_dir': None})


def table_rows(text: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip().strip('|').split('|')]
        for line in text.splitlines()
        if line.startswith('| `')
    ]


def close(a, b) -> bool:
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and math.isclose(a, b, rel_tol=1e-3)
    return a == b


def test_the_config_reference_lists_every_key_with_its_default():
    config = settings_lib.default_config()
    rows = table_rows((ROOT / 'docs' / 'config.md').read_text())
    documented = {row[0].strip('`'): row for row in rows}
    keys = {k for k in command.config_keys(config, leaves_only=True)}
    assert set(documented) == keys, (
        f'missing: {sorted(keys - set(documented))}; unknown: {sorted(set(documented) - keys)}'
    )
    for key, (_, kind, default, _) in documented.items():
        value = config
        for part in key.split('.'):
            value = value[part]
        value = value.to_dict() if hasattr(value, 'to_dict') else value
        if default == 'unset':
            assert value is None, key
            continue
        if not (default.startswith('`') and default.endswith('`')):
            continue  # described in words (evaluation.area_ranges)
        assert close(ast.literal_eval(default.strip('`')), value), (key, default, value)
        assert kind == {'dict': 'dict'}.get(type(value).__name__, type(value).__name__), key


def test_the_commands_page_lists_every_command_with_exactly_its_flags():
    text = (ROOT / 'docs' / 'commands.md').read_text()
    sections = dict(re.findall(r'^## (\w+)\n(.*?)(?=^## |\Z)', text, re.M | re.S))
    assert list(sections) == list(COMMANDS)
    for name, body in sections.items():
        module = importlib.import_module(f'retinanet_jax.commands.{name}')
        fv = command.flag_values(module, [name])
        documented = {row[0].strip('`').lstrip('-') for row in table_rows(body)}
        assert documented == {n for n in fv if fv[n].name == n}, name


def python_snippets():
    for path, lang, body, line, before in doc_blocks():
        if lang == 'python':
            claim = re.match(r'<!-- snippet: (\w+)', before)
            yield f'{path.relative_to(ROOT)}:{line}', body, claim.group(1) if claim else None


def test_marked_snippets_are_run_by_the_tests_that_claim_them():
    marked = {name for _, _, name in python_snippets() if name}
    assert marked == set(CLAIMS)
    for name, module in CLAIMS.items():
        assert f"doc_snippet('{name}')" in (ROOT / 'tests' / module).read_text(), (name, module)


@pytest.mark.slow
def test_every_python_snippet_runs(tmp_path, monkeypatch, smoke_run):
    from PIL import Image

    from retinanet_jax.data import shapes as shapes_data

    image = shapes_data.generate_example(0, 'validation', image_size=64)['image']
    Image.fromarray(image).save(tmp_path / 'photo.jpg')
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT))
    ran = 0
    for where, code, claim in python_snippets():
        if claim:
            continue
        code = code.replace("'/tmp/shapes'", repr(str(smoke_run[0])))
        namespace = {'__name__': 'docs_snippet'}
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                exec(compile(code, where, 'exec'), namespace)
                if 'get_config' in namespace:
                    settings_lib.from_config(namespace['get_config']())
        except Exception as e:
            raise AssertionError(f'{where}: the snippet fails: {type(e).__name__}: {e}') from e
        # a print whose comment starts like a tuple is the output shown: it must be the output
        shown = re.findall(r'^print\(.*\)  # (\(.*)$', code, re.M)
        printed = out.getvalue().splitlines()
        assert shown == printed[-len(shown) :] if shown else True, (where, shown, printed)
        ran += 1
    assert ran >= 10, ran


def test_doc_snippet_finds_marked_snippets():
    assert 'onnxruntime' in doc_snippet('onnxruntime')
    with pytest.raises(KeyError):
        doc_snippet('no such snippet')


def test_no_front_page_history():
    """The README: at most 200 lines, and no issue numbers, commits or dates outside its
    benchmark table."""
    lines = (ROOT / 'README.md').read_text().splitlines()
    assert len(lines) <= 200, len(lines)
    table = False
    for number, line in enumerate(lines, 1):
        table = line.startswith('| benchmark') or (table and line.startswith('|'))
        if table:
            continue
        assert not re.search(HISTORY, line), f'README.md:{number}: {line}'


def test_the_demo_figures_agree_everywhere():
    """The README's demo figures (time and mAP) are those of the demo config's docstring and
    the notebook's first cell."""
    import json

    readme = (ROOT / 'README.md').read_text()
    figures = ('about 7 minutes', '0.74-0.76')
    assert all(f in readme.replace('\n', ' ') for f in figures)
    notebook = json.loads((ROOT / 'notebooks' / 'quickstart.ipynb').read_text())
    for where, text in (
        ('configs/shapes.py', shapes.__doc__),
        ('the notebook', ''.join(notebook['cells'][0]['source'])),
    ):
        text = text.replace('\n', ' ')
        assert all(f in text for f in figures), where
