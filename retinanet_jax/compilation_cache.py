"""JAX's persistent compilation cache: compiled XLA programs kept on disk, so that a second run
of the same config, a resumed run, or another process building the same model skips XLA
compilation (tens of seconds for R50-FPN on a GPU).

  enable()            # the default folder (below); what train.py, predict, evaluate, export
                      # and bench call at start-up
  enable('/my/cache') # another folder;  enable('') turns the cache off

Default folder: $RETINANET_JAX_CACHE if set, else $XDG_CACHE_HOME/retinanet-jax/jax, else
~/.cache/retinanet-jax/jax. The tools take --compilation_cache=DIR ('' for none). Entries are
keyed by the program, the jax / jaxlib version, the backend and the compile options, so a
stale entry is never used; the folder can be deleted at any time.
"""

import os
from pathlib import Path

import jax

ENV = 'RETINANET_JAX_CACHE'


def default_directory() -> str:
    if os.environ.get(ENV) is not None:
        return os.environ[ENV]
    base = os.environ.get('XDG_CACHE_HOME') or str(Path.home() / '.cache')
    return str(Path(base) / 'retinanet-jax' / 'jax')


def enable(directory: str | None = None) -> str | None:
    """Turns the persistent cache on in `directory` (None: the default; '': off) for every
    later compilation in this process, small programs included. Returns the folder used."""
    directory = default_directory() if directory is None else directory
    if not directory:
        jax.config.update('jax_enable_compilation_cache', False)
        return None
    Path(directory).mkdir(parents=True, exist_ok=True)
    jax.config.update('jax_enable_compilation_cache', True)
    jax.config.update('jax_compilation_cache_dir', directory)
    # Cache every program: on a CPU even the small ones take a second or more to compile
    # (unless JAX's own variable says otherwise, as the test suite's does).
    if 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS' not in os.environ:
        jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
    jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
    return directory
