"""The fuzz runner behind ``python -m fuzz``: each target in a subprocess, for a set time.

For each target it keeps a working corpus in ``WORKDIR/TARGET/corpus`` (kept between runs,
so a nightly job that caches WORKDIR starts where the last one stopped), reads the committed
seeds in ``fuzz/corpus/TARGET/``, writes libFuzzer's artifacts (``crash-*``, ``timeout-*``,
``oom-*``) to ``WORKDIR/TARGET/artifacts/`` and copies each new one into
``tests/regress/TARGET/``, where pytest replays it. libFuzzer stops at the first crash, so
the runner starts the target again for the time left; the engine then skips failures it has
already reported (``fuzz._engine``), so each restart looks for a new one.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fuzz import CORPUS_DIR, REPO_ROOT, TARGETS, Target

__all__ = ["RunResult", "main", "run_target"]

DEFAULT_WORKDIR = Path(tempfile.gettempdir()) / "pds-fuzz"
DICTIONARY = CORPUS_DIR.parent / "msgpack.dict"
"""Canonical msgpack values of every type, offered to every target's mutator."""
MAX_RESTARTS = 20
ARTIFACT_PREFIXES = ("crash-", "timeout-", "oom-", "leak-")
_STATUS = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/", re.MULTILINE)
_EXECUTED = re.compile(r"stat::number_of_executed_units:\s+(\d+)")
_FINDING = re.compile(r"^=== new finding: (.+)$", re.MULTILINE)


@dataclass
class RunResult:
    target: str
    seconds: float = 0.0
    execs: int = 0
    cov: int | None = None
    """libFuzzer's ``cov``: instrumented Python branches (edges) reached."""
    ft: int | None = None
    """libFuzzer's ``ft``: coverage features (edges with hit-count buckets)."""
    corpus: int = 0
    """Inputs in the working corpus at the end."""
    restarts: int = 0
    findings: list[str] = field(default_factory=list)
    """Artifact files written this run (copied to ``tests/regress/TARGET/`` by default)."""
    signatures: list[str] = field(default_factory=list)

    @property
    def execs_per_second(self) -> float:
        return self.execs / self.seconds if self.seconds else 0.0


def _engine_command(
    target: Target, corpus: Path, artifacts: Path, seconds: int, runs: int | None, seed: int | None
) -> list[str]:
    command = [sys.executable, "-m", "fuzz._engine", target.name, str(corpus)]
    if target.seeds.is_dir():
        command.append(str(target.seeds))
    command += [
        f"-max_total_time={seconds}",
        f"-artifact_prefix={artifacts}/",
        f"-max_len={target.max_len}",
        "-timeout=30",
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
        f"-dict={DICTIONARY}",
    ]
    if runs is not None:
        command.append(f"-runs={runs}")
    if seed is not None:
        command.append(f"-seed={seed}")
    return command


@functools.cache
def known_signatures() -> frozenset[str]:
    """The signatures of every input in ``tests/regress/`` that still fails, whichever
    target found it: a bug is known to every target that can reach it (``LogEntry.parse``
    through the envelope, the importer and the auditor, say)."""
    from fuzz.targets import signature  # noqa: PLC0415 - imports pds, which the CLI needs not

    names: set[str] = set()
    for target in TARGETS.values():
        if not target.regressions.is_dir():
            continue
        files = sorted(p for p in target.regressions.iterdir() if p.name.startswith("crash-"))
        if not files:
            continue
        test = importlib.import_module(target.module).TestOneInput
        for path in files:
            try:
                test(path.read_bytes())
            except Exception as exc:
                names.add(signature(exc))
    return frozenset(names)


def _artifacts(directory: Path) -> set[Path]:
    return {p for p in directory.iterdir() if p.name.startswith(ARTIFACT_PREFIXES)}


def run_target(
    target: Target,
    *,
    seconds: int,
    workdir: Path = DEFAULT_WORKDIR,
    runs: int | None = None,
    seed: int | None = None,
    regress: bool = True,
    echo: bool = False,
) -> RunResult:
    """Fuzz ``target`` for ``seconds`` (or ``runs`` inputs, whichever ends first)."""
    work = workdir / target.name
    corpus, artifacts = work / "corpus", work / "artifacts"
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    known = work / "known.txt"
    known.write_text("".join(f"{name}\n" for name in sorted(known_signatures())))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONHASHSEED"] = "0"
    env["PDS_FUZZ_KNOWN"] = str(known)
    result = RunResult(target.name)
    start = time.monotonic()
    deadline = start + seconds
    while True:
        remaining = max(1, int(deadline - time.monotonic()))
        before = _artifacts(artifacts)
        log_path = work / f"run-{result.restarts}.log"
        with log_path.open("w") as log:
            completed = subprocess.run(  # noqa: S603 - our own interpreter and arguments
                _engine_command(target, corpus, artifacts, remaining, runs, seed),
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=remaining + 300,
                check=False,
            )
        output = log_path.read_text(errors="replace")
        if echo:
            sys.stderr.write(output)
        executed = _EXECUTED.findall(output)
        statuses = _STATUS.findall(output)
        if executed:
            result.execs += int(executed[-1])
        elif statuses:
            result.execs += int(statuses[-1][0])
        if statuses:
            result.cov, result.ft = int(statuses[-1][1]), int(statuses[-1][2])
        result.signatures += _FINDING.findall(output)
        new = sorted(_artifacts(artifacts) - before)
        for artifact in new:
            result.findings.append(artifact.name)
            if regress:
                target.regressions.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(artifact, target.regressions / artifact.name)
        out_of_time = deadline - time.monotonic() < 2
        if completed.returncode == 0 or not new or runs is not None or out_of_time:
            break
        if result.restarts >= MAX_RESTARTS:
            break
        result.restarts += 1
    result.seconds = round(time.monotonic() - start, 1)
    result.corpus = sum(1 for _ in corpus.iterdir())
    return result


def _print(result: RunResult) -> None:
    found = ", ".join(result.findings) or "none"
    print(
        f"{result.target:<11} {result.seconds:>7.1f} s {result.execs:>10} execs "
        f"({result.execs_per_second:,.0f}/s)  cov {result.cov}  ft {result.ft}  "
        f"corpus {result.corpus}  findings: {found}",
        flush=True,
    )
    for name in result.signatures:
        print(f"{'':<11} new finding: {name}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fuzz",
        description="Run pds fuzz targets under atheris (see docs/fuzzing.md).",
    )
    parser.add_argument(
        "targets",
        nargs="+",
        metavar="TARGET",
        help=f"'all', 'list', or target names: {', '.join(TARGETS)}",
    )
    parser.add_argument("--seconds", type=int, default=300, help="per target (default 300)")
    parser.add_argument("--runs", type=int, help="stop a target after this many inputs")
    parser.add_argument("--seed", type=int, help="libFuzzer's random seed (default: random)")
    parser.add_argument("--jobs", type=int, default=1, help="targets fuzzed at once")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=DEFAULT_WORKDIR,
        help=f"working corpora and artifacts (default {DEFAULT_WORKDIR})",
    )
    parser.add_argument(
        "--no-regress",
        dest="regress",
        action="store_false",
        help="do not copy findings into tests/regress/",
    )
    parser.add_argument("--report", type=Path, help="also write the results as JSON here")
    parser.add_argument("--verbose", action="store_true", help="echo libFuzzer's output")
    args = parser.parse_args(argv)
    if args.targets == ["list"]:
        for target in TARGETS.values():
            print(f"{target.name:<11} {target.surface}")
        return 0
    names = list(TARGETS) if args.targets == ["all"] else args.targets
    unknown = [name for name in names if name not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s): {', '.join(unknown)}")

    def one(name: str) -> RunResult:
        result = run_target(
            TARGETS[name],
            seconds=args.seconds,
            workdir=args.workdir,
            runs=args.runs,
            seed=args.seed,
            regress=args.regress,
            echo=args.verbose,
        )
        _print(result)
        return result

    # Once, before any thread starts: replaying the CLI's regressions swaps sys.stdout.
    known_signatures()
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(one, names))
    if args.report is not None:
        document = [
            {**asdict(r), "execs_per_second": round(r.execs_per_second, 1)} for r in results
        ]
        args.report.write_text(json.dumps(document, indent=2) + "\n")
    return 1 if any(result.findings for result in results) else 0
