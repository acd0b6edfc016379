import pytest

from support import Stack, start_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Stack:
    """One running gateway for the whole session; its logs are printed if a test fails."""
    running = start_stack(tmp_path_factory.mktemp("stack"))
    yield running
    running.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    running = item.funcargs.get("stack") if hasattr(item, "funcargs") else None
    if report.failed and running is not None:
        report.sections.append(("service logs", running.logs()))
