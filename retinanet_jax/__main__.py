"""`python -m retinanet_jax <command> [flags]` and the `retinanet-jax` console script: runs one
of commands.COMMANDS (commands/command.py has their shape); `--help` lists them."""

import ast
import importlib
import importlib.util
import os
import sys
from pathlib import Path

from retinanet_jax.commands import COMMANDS, command

PROG = 'retinanet-jax'


def usage() -> str:
    """The commands with their one-line summaries (read from their docstrings: nothing of
    theirs is imported)."""
    lines = [f'usage: {PROG} <command> [--flag=value ...]   ({PROG} <command> --help: its flags)']
    lines.append('')
    lines.append('commands:')
    for name in COMMANDS:
        spec = importlib.util.find_spec(f'retinanet_jax.commands.{name}')
        doc = ast.get_docstring(ast.parse(Path(spec.origin).read_text()))
        lines.append(f'  {name:<10} {command.summary(doc)}')
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv if argv is None else argv
    if len(argv) < 2 or argv[1] in command.HELP:
        print(usage())
        return 0 if len(argv) >= 2 else 2
    name = argv[1]
    if name not in COMMANDS:
        print(f'{PROG}: no command {name!r}; the commands: {", ".join(COMMANDS)}', file=sys.stderr)
        return 2
    module = importlib.import_module(f'retinanet_jax.commands.{name}')
    return command.run(module, [f'{PROG} {name}', *argv[2:]], prog=name)


def console_script() -> None:
    """The `retinanet-jax` entry point (pyproject.toml). The working directory comes first on
    sys.path, as with `python -m`: a config file may import the configs next to it."""
    sys.path.insert(0, os.getcwd())
    sys.exit(main())


if __name__ == '__main__':
    console_script()
