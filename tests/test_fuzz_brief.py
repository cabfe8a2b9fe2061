"""Every fuzz target, fuzzed for real with atheris for a few seconds (``docs/fuzzing.md``).

This is the CI slice of ``make fuzz``: each target runs in its own process under libFuzzer
with a fixed random seed, starting from its committed seeds, for ``SECONDS`` seconds. It
fails on any new finding (an input that breaks the contract and is not already replayed
from ``tests/regress/``); the input is left in the test's temporary directory and named in
the failure, to be copied to ``tests/regress/TARGET/``. atheris is in the test extras: on
Linux, where it installs, a missing atheris fails this test rather than skipping it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the fuzz package lives at the repository root
    sys.path.insert(0, str(ROOT))

from fuzz import TARGETS  # noqa: E402
from fuzz._runner import RunResult, run_target  # noqa: E402

SECONDS = 4
"""Per target; with start-up, all eight take about 45 s on a 2-core machine."""

pytestmark = pytest.mark.timeout(300)


def test_atheris_is_installed() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("atheris is a test extra on Linux only")
    assert importlib.util.find_spec("atheris") is not None, (
        "atheris is missing: pip install -e '.[test]'"
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="atheris is Linux-only")
def test_every_target_fuzzes_briefly(tmp_path: Path) -> None:
    assert importlib.util.find_spec("atheris") is not None, "atheris is missing"
    results: list[RunResult] = []
    for target in TARGETS.values():
        results.append(run_target(target, seconds=SECONDS, workdir=tmp_path, seed=1, regress=False))
    problems = []
    for result in results:
        log = tmp_path / result.target / "run-0.log"
        if result.execs == 0 or not result.cov:
            problems.append(f"{result.target} did not run: see {log}")
        for finding in result.findings:
            artifact = tmp_path / result.target / "artifacts" / finding
            problems.append(
                f"{result.target}: new finding {', '.join(result.signatures) or finding}; "
                f"input {artifact} (replay: copy it to tests/regress/{result.target}/)"
            )
    assert not problems, "\n".join(problems)
