"""`mercator policy test`, as `make policy-test` runs it: it passes on the shipped policies,
examples and library included, and fails, naming the test, when one test is broken."""

import shutil
import subprocess

from support import BIN, ROOT


def policy_test(directory) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "mercator"), "policy", "test", str(directory)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_the_shipped_policy_tests_pass_and_cover_examples_and_library(tmp_path):
    done = policy_test(ROOT / "policies")

    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 failed" in done.stdout
    assert "mercator.lib.prompt_injection_test" in done.stdout
    assert "mercator.policy.pii_test" in done.stdout


def test_one_broken_test_fails_the_run_and_is_named(tmp_path):
    policies = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", policies)
    with (policies / "department_test.rego").open("a") as test_file:
        test_file.write('\ntest_finance_may_use_claude if {\n\tdepartment.allow with input as '
                        '{"request": {"user": {"department": "finance"}, "model": "claude-3-sonnet"}}\n}\n')

    done = policy_test(policies)

    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL data.mercator.policy.department_test.test_finance_may_use_claude" in done.stdout
    assert ", 1 failed" in done.stdout
