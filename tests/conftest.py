"""Shared test setup: the import order, a compilation cache, no skips under CI, and the trained
smoke run.

torch must be imported before tensorflow in one process (tensorflow first segfaults inside
triton), so it is imported here (pytest_configure), where installed, before any test module
can pull tensorflow in; torchvision too, since torchvision.ops imports torch._dynamo and with
it triton, which torch alone does not (running test_data.py before test_models.py alone
crashed that way).
Tests that need torch (or another optional tool) skip where it is missing (helpers.require),
and fail instead under RETINANET_JAX_NO_SKIPS=1, which .ci/run sets.
"""

import atexit
import os
import shutil
import tempfile

import pytest

from .helpers import NO_SKIPS


def pytest_configure(config):
    """torch first, in every process that imports test modules (not pytest-xdist's controller,
    which only hands tests out: ~3.4 CPU-s saved)."""
    if config.getoption('numprocesses', None) and not hasattr(config, 'workerinput'):
        return
    try:
        import torch
        import torchvision
        import torchvision.ops  # noqa: F401
    except ImportError:  # the tests that need them skip (helpers.require)
        pass
    else:
        torch.set_num_threads(2)


pytest_plugins = ['pytester']  # tests/test_skips.py

# One persistent compilation cache for the test suite, shared by every test process (the tools
# read RETINANET_JAX_CACHE; other subprocesses and this process, JAX's own variables), so that
# separate processes that build the same model compile it once. It outlives the session
# (~/.cache/retinanet-jax/test-jax, at most 2 GiB, least recently used entries evicted): a
# second run of the suite loads what the first compiled. Entries are keyed by the program, the
# jax version and the compile options, so a stale one is never used. RETINANET_JAX_TEST_CACHE
# names another folder; RETINANET_JAX_TEST_CACHE='' gives the session a fresh, empty one.
# Only programs that take a second or more to compile are kept (JAX's default, which the tools
# honour when the variable is set): writing the suite's ~2,000 small eager-op programs cost
# more than it saved (tests of boxes, losses and matching cold: 58 -> 45 CPU-s).
_CACHE = os.environ.get('RETINANET_JAX_TEST_CACHE')
if _CACHE is None:
    _CACHE = os.path.join(
        os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'),
        'retinanet-jax',
        'test-jax',
    )
elif not _CACHE:
    _CACHE = tempfile.mkdtemp(prefix='retinanet-jax-test-cache-')
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
    os.environ['RETINANET_JAX_TEST_CACHE'] = _CACHE  # the pytest-xdist workers share it
os.makedirs(_CACHE, exist_ok=True)
os.environ.update(
    RETINANET_JAX_CACHE=_CACHE,
    JAX_COMPILATION_CACHE_DIR=_CACHE,
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='1',
    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0',
    JAX_COMPILATION_CACHE_MAX_SIZE=str(2 << 30),
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under RETINANET_JAX_NO_SKIPS=1 (CI) a skipped test is a failed one, whatever skipped it
    (a test module that skips as a whole fails through helpers.require)."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get(NO_SKIPS) and not hasattr(report, 'wasxfail'):
        report.outcome = 'failed'
        report.longrepr = f'{NO_SKIPS} is set and this test skipped: {report.longrepr}'


def pytest_collection_modifyitems(config, items):
    """The long tests (marked slow or multiprocess) spread over the pytest-xdist workers, each
    worker's share first, the multiprocess ones (the longest, whose subprocesses the other
    worker's tests run beside) at the very start: worksteal hands each worker a contiguous
    slice of the queue, and an idle worker steals from the end of another's, so the short tests
    fill in at the end. (In file order, the two-process test once started 200 s in, and one
    worker idled for the last 22 s.)"""
    workers = config.getoption('numprocesses', None) or 1
    workers = workers if isinstance(workers, int) else 2

    def long(item):
        return any(item.iter_markers('slow')) or any(item.iter_markers('multiprocess'))

    heavy, light = [i for i in items if long(i)], [i for i in items if not long(i)]
    heavy.sort(key=lambda i: not any(i.iter_markers('multiprocess')))  # stable
    size = -(-len(items) // workers)  # each worker's slice
    ordered = []
    for w in range(workers):
        mine = heavy[w::workers]
        ordered += mine + light[: max(size - len(mine), 0)]
        light = light[max(size - len(mine), 0) :]
    items[:] = ordered + light


@pytest.fixture(scope='session')
def smoke_run(tmp_path_factory):
    """configs/smoke.py trained straight through (4 steps), shared by every test that needs a
    trained run, in every pytest-xdist worker (the first trains it, the others wait and read
    it): (workdir, summary). Tests copy it before changing anything in it."""
    from configs import smoke

    return shared_run(tmp_path_factory, 'smoke-run', smoke.get_config)


@pytest.fixture(scope='session')
def crop_run(tmp_path_factory, smoke_run):
    """The smoke run trained by 64-px windows of 96-px images instead (helpers.crop_config;
    the smoke run's programs: the same canvas, model and schedule), shared as smoke_run."""
    from .helpers import crop_config

    return shared_run(tmp_path_factory, 'crop-run', crop_config)


def shared_run(tmp_path_factory, name: str, get_config):
    """(workdir, summary) of get_config()'s run, trained once per session (the first worker
    trains it, the others wait and read it)."""
    import json

    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get('PYTEST_XDIST_WORKER'):  # workers' base folders share this session's parent
        shared = shared.parent
    workdir = shared / name
    with FileLock(str(shared / f'{name}.lock')):
        if not (workdir / 'metrics.json').is_file():
            from retinanet_jax.training import trainer

            trainer.train_and_evaluate(get_config(), str(workdir))
    return workdir, json.loads((workdir / 'metrics.json').read_text())
