"""``python -m fuzz._engine TARGET [libFuzzer arguments]``: one target under atheris.

The runner (``python -m fuzz``) starts this in a subprocess. It imports the target, and
with it pds and the CLI, under ``atheris.instrument_imports`` so their branches are the
coverage libFuzzer steers by, then fuzzes until libFuzzer stops.

Failures already known are not reported again, so a run keeps looking for new ones: those
of every input under ``tests/regress/TARGET/`` (replayed here first) and those named in the
file ``$PDS_FUZZ_KNOWN`` (the runner's list of what this run found so far). A new failure's
signature is appended to that file before atheris records the crashing input.
"""

from __future__ import annotations

import importlib
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from fuzz import TARGETS, Target

KNOWN_ENV = "PDS_FUZZ_KNOWN"
INSTRUMENTED = ["pds", "pds_cli", "fuzz", "base58"]


def _known(target: Target, test: Callable[[bytes], None], known_file: Path | None) -> set[str]:
    from fuzz.targets import signature  # noqa: PLC0415 - imported instrumented in main

    known: set[str] = set()
    if known_file is not None and known_file.exists():
        known.update(line for line in known_file.read_text().splitlines() if line)
    if target.regressions.is_dir():
        for path in sorted(target.regressions.iterdir()):
            if not path.is_file() or path.name.startswith(("README", ".")):
                continue
            try:
                test(path.read_bytes())
            except Exception as exc:
                known.add(signature(exc))
    return known


def _warm_up(target: Target, test: Callable[[bytes], None]) -> None:
    """Run every seed once before fuzzing starts, so that building the world (and the
    stores and scratch directories a target makes on first use) happens outside the fuzzing
    loop: it neither counts as a slow first unit nor as coverage of the first input, and
    ``cov`` compares across targets and runs."""
    test(b"")
    for path in sorted(target.seeds.iterdir()) if target.seeds.is_dir() else []:
        try:
            test(path.read_bytes())
        except Exception:  # noqa: S112 - a failing seed is reported when libFuzzer runs it
            continue


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in TARGETS:
        sys.exit(f"usage: python -m fuzz._engine {{{','.join(TARGETS)}}} [libFuzzer flags]")
    target = TARGETS[argv[1]]
    # atheris is imported here, not at the top, so that `python -m fuzz` and the tests can
    # import this package where atheris is missing.
    import atheris  # noqa: PLC0415

    with atheris.instrument_imports(include=INSTRUMENTED):
        module = importlib.import_module(target.module)
        from fuzz.targets import signature  # noqa: PLC0415 - instrumented with the target
    test: Callable[[bytes], None] = module.TestOneInput
    known_path = os.environ.get(KNOWN_ENV)
    known_file = Path(known_path) if known_path else None
    known = _known(target, test, known_file)
    _warm_up(target, test)

    def one_input(data: bytes) -> None:
        try:
            test(data)
        except Exception as exc:
            name = signature(exc)
            if name in known:
                return
            if known_file is not None:
                with known_file.open("a") as out:
                    out.write(name + "\n")
            print(f"\n=== new finding: {name}", file=sys.stderr, flush=True)
            raise

    # libFuzzer runs argv[0] again for -merge (and -minimize_crash): make it this command.
    command = shlex.join([sys.executable, "-m", "fuzz._engine", target.name])
    atheris.Setup([command, *argv[2:]], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
