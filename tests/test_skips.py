"""helpers.require: a test that needs a missing tool skips, naming the tool and the install line;
under RETINANET_JAX_NO_SKIPS=1 (set by .ci/run) it fails instead, as does any other skip."""

from .helpers import INSTALL, NO_SKIPS

TESTS = {
    'test_in_a_test': """
        from tests.helpers import require

        def test_needs_a_tool():
            require('no_such_tool_xyz')

        def test_needs_none():
            require('json')
    """,
    'test_at_module_level': """
        from tests.helpers import require

        require('no_such_tool_xyz')

        def test_never_collected():
            pass
    """,
    'test_plain_skip': """
        import pytest

        def test_skipped():
            pytest.skip('for a reason of its own')
    """,
}


def test_missing_tools_skip_with_the_install_line_and_fail_under_no_skips(pytester, monkeypatch):
    pytester.makeconftest('from tests.conftest import pytest_runtest_makereport  # noqa: F401')
    pytester.makepyfile(**TESTS)
    monkeypatch.delenv(NO_SKIPS, raising=False)
    result = pytester.runpytest_inprocess('-p', 'no:xdist', '-rs')
    result.assert_outcomes(passed=1, skipped=3)
    result.stdout.fnmatch_lines([f'*needs no_such_tool_xyz (*); install: {INSTALL}*'])

    monkeypatch.setenv(NO_SKIPS, '1')
    result = pytester.runpytest_inprocess('-p', 'no:xdist', '--continue-on-collection-errors')
    result.assert_outcomes(passed=1, failed=2, errors=1)  # (a collection error stops a run)
    result.stdout.fnmatch_lines([f'*{NO_SKIPS} is set and a test needs no_such_tool_xyz*'])
    result.stdout.fnmatch_lines([f'*{NO_SKIPS} is set and this test skipped*for a reason*'])
