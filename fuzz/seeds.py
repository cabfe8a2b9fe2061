"""``python -m fuzz.seeds``: write the seed corpora in ``fuzz/corpus/TARGET/`` from the world.

Seeds are real objects of the deterministic world (``fuzz._world``): its tokens, invocations,
manifests, responses, log entries, checkpoint, audit package and export, framed for the
target that reads them. The world is deterministic, so this writes the same bytes every
time; rerun it when a format changes (``tests/test_fuzz_regress.py`` checks that the seeds
still reach past the signature checks). ``--check`` compares instead of writing.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from fuzz import CORPUS_DIR, TARGETS
from fuzz._data import Builder
from fuzz._world import World, world
from fuzz.targets import cli, envelope, importer
from pds import _codec, audit, merkle
from pds.accesslog import LogEntry

__all__ = ["build_seeds", "main"]

Seeds = dict[str, dict[str, bytes]]


def _token_seeds(w: World) -> dict[str, bytes]:
    seeds: dict[str, bytes] = {}
    for name, token in w.tokens.items():
        seeds[f"{name}.bin"] = token.to_bytes()
        seeds[f"{name}.txt"] = token.to_text().encode()
    return seeds


def _invocation_seeds(w: World) -> dict[str, bytes]:
    seeds: dict[str, bytes] = {}
    for name, invocation in w.invocations.items():
        seeds[f"{name}.bin"] = invocation.to_bytes()
        seeds[f"{name}.txt"] = invocation.to_text().encode()
    return seeds


def _log_entries(w: World) -> list[LogEntry]:
    backend = w.store.backend
    size = backend.log_size(w.vault_id)
    return [LogEntry.parse(raw) for _, raw in backend.iter_log(w.vault_id, 0, size)]


def _envelope_seeds(w: World) -> dict[str, bytes]:
    mode = {name: index for index, name in enumerate(envelope.MODES)}
    seeds: dict[str, bytes] = {}

    def add(name: str, kind: str, data: bytes) -> None:
        seeds[f"{kind}-{name}"] = bytes([mode[kind]]) + data

    documents = {
        "map": {"a": 1, "b": [True, None, -5, 2**63], "c": {"d": 1.5, "e": "text"}},
        "bytes": {"k": b"\x00\x01", "n": -(2**63), "u": 2**64 - 1},
        "nested": [[[[[{"x": []}]]]]],
        "float": [0.0, -1e308, 5e-324],
    }
    for name, value in documents.items():
        add(name, "codec", _codec.encode(value))
    add("token", "codec", w.tokens["root"].to_bytes())
    backend = w.store.backend
    for number, batch in enumerate(backend.iter_batches(w.vault_id)):
        add(str(number), "manifest", batch.manifest)
        for record in backend.iter_batch_records(w.vault_id, batch.batch_id):
            if record.ciphertext is not None and record.nonce == b"":
                add(record.record_id, "fields", record.ciphertext)
    for number, (name, response) in enumerate(sorted(w.responses.items())):
        choice = {"read": 0, "list": 1, "fields": 2}[name]
        add(str(number), "response", bytes([choice]) + response)
    secret = w.vault._keys().x25519_secret
    for entry in _log_entries(w)[:4]:
        add(str(entry.index), "log-entry", entry.disclosure_key(secret) + entry.raw)
    # One field of a genuine response replaced by a harmless value: the cursor, the access.
    for choice, name in enumerate(("read", "list", "fields")):
        keys = sorted(_codec.decode(w.responses[name]))
        cursor = Builder().byte(choice).byte(keys.index("cursor")).flag(False)
        add(f"{name}-cursor", "response-field", cursor.chunk(_codec.encode(None)).build())
        access = Builder().byte(choice).byte(keys.index("access")).flag(False)
        add(f"{name}-access", "response-field", access.chunk(_codec.encode(7)).build())
    return seeds


def _checkpoint_seeds(w: World) -> dict[str, bytes]:
    latest = w.vault.latest_checkpoint()
    assert latest is not None
    cosigned = latest.to_text() + "\u2014 example.org/witness AAAAAAAAAAAAAAAA\n"
    return {
        "first.txt": w.checkpoint.encode(),
        "latest.txt": latest.to_text().encode(),
        "cosigned.txt": cosigned.encode(),
    }


def _proof_seeds() -> dict[str, bytes]:
    seeds: dict[str, bytes] = {}
    leaves = [merkle.leaf_hash(b"entry %d" % i) for i in range(64)]
    # Inclusion (flag 0): small index and size, the genuine leaf, root and proof nodes.
    for index, size in ((0, 1), (2, 7), (31, 64), (5, 6)):
        count = len(merkle.inclusion_proof(index, leaves[:size]))
        b = Builder().flag(False).byte(2).byte(index).byte(2).byte(size)
        b.flag(True).flag(True).byte(count)
        for _ in range(count):
            b.flag(True)
        seeds[f"inclusion-{index}-{size}"] = b.build()
    # Consistency (flag 1).
    for old, new in ((1, 2), (3, 7), (4, 8), (6, 64)):
        count = len(merkle.consistency_proof(old, leaves[:new]))
        b = Builder().flag(True).byte(2).byte(old).byte(2).byte(new)
        b.flag(True).flag(True).byte(count)
        for _ in range(count):
            b.flag(True)
        seeds[f"consistency-{old}-{new}"] = b.build()
    seeds["fuzzed-nodes"] = (
        Builder()
        .flag(False)
        .byte(1)
        .raw((7).to_bytes(8, "big"))
        .byte(1)
        .raw((9).to_bytes(8, "big"))
        .flag(False)
        .byte(0)
        .raw(merkle.leaf_hash(b"x"))
        .flag(False)
        .byte(0)
        .raw(merkle.EMPTY_ROOT)
        .byte(2)
        .flag(False)
        .byte(0)
        .raw(bytes(32))
        .flag(False)
        .byte(210)
        .raw(bytes(10))
        .build()
    )
    return seeds


def _audit_seeds(w: World) -> dict[str, bytes]:
    seeds: dict[str, bytes] = {}
    for mode, name in enumerate(audit.FILES):
        seeds[f"file-{name}"] = bytes([mode]) + (w.audit_dir / name).read_bytes()
    seeds["trusted-head"] = bytes([5]) + w.checkpoint.encode()
    secret = w.vault._keys().x25519_secret
    released = [e for e in _log_entries(w) if e.kind in ("read", "list") and e.link_id]
    for number, entry in enumerate(released):
        details = _codec.encode(entry.open(secret))
        seeds[f"details-{number}"] = bytes([6, number]) + details
    for number, entry in enumerate(released):
        keys = sorted(entry.open(secret))
        extra = Builder().byte(8).byte(number).byte(len(keys)).text("note")
        seeds[f"details-field-{number}"] = extra.chunk(_codec.encode("x")).build()
    outer = _codec.decode((w.audit_dir / "revocations.bin").read_bytes())
    seeds["revocations-body"] = bytes([7]) + outer["body"]
    return seeds


def _cli_seeds(w: World) -> dict[str, bytes]:
    mode = {name: index for index, name in enumerate(cli.COMMANDS)}

    def command(name: str, options: int) -> Builder:
        return Builder().byte(mode[name]).byte(options)

    chain3 = w.tokens["chain3"].to_text().encode()
    return {
        "inspect-file": command("inspect-file", 1).raw(chain3).build(),
        "inspect-text": command("inspect-text", 0).text(chain3.decode()).build(),
        "verify": command("verify", 7).flag(True).text("2025-06-16T00:00:00").raw(chain3).build(),
        "verify-expired": command("verify", 4).text("2030-01-01").raw(chain3).build(),
        "prove": command("prove", 3).flag(True).text("2").text("5").build(),
        "consistency": command("consistency", 3).flag(True).text("2").text("5").build(),
        "head": command("head", 1).flag(True).raw(w.checkpoint.encode()).build(),
        "import": command("import", 1).raw(w.export).build(),
        "audit": command("audit", 1).raw(w.checkpoint.encode()).build(),
        "argv-log": Builder()
        .byte(mode["argv"])
        .byte(0)
        .byte(5)
        .byte(3)
        .flag(False)
        .text(w.vault_id)
        .flag(True)
        .byte(10)
        .flag(True)
        .byte(0)
        .build(),
        "argv-verify": Builder()
        .byte(mode["argv"])
        .byte(0)
        .byte(1)
        .byte(3)
        .flag(False)
        .text(chain3.decode())
        .flag(True)
        .byte(7)
        .flag(False)
        .text(w.vault.did)
        .build(),
    }


def _importer_field_seeds(w: World) -> dict[str, bytes]:
    """Mode 2 of the importer: one field of one frame replaced, harmlessly here (a time)."""
    split = importer._split(w.export)
    assert split is not None
    frames = split[0]
    kinds = [frame.get("t") if isinstance(frame, dict) else None for frame in frames]
    header = frames[0]
    assert isinstance(header, dict)
    seeds = {
        "field-header": Builder()
        .byte(2)
        .byte(0)
        .byte(sorted(header).index("exported_at"))
        .flag(False)
        .chunk(_codec.encode(1_750_000_000_001))
        .build()
    }
    log = kinds.index("log")
    log_frame = frames[log]
    assert isinstance(log_frame, dict)
    entry = _codec.decode(log_frame["entry"])
    seeds["field-log-entry"] = (
        Builder()
        .byte(2)
        .byte(log)
        .byte(0)  # "entry", the first of the frame's sorted keys
        .flag(True)
        .byte(sorted(entry).index("time"))
        .flag(False)
        .chunk(_codec.encode(5))
        .build()
    )
    return seeds


def build_seeds() -> Seeds:
    """Every target's seeds, by target and file name."""
    w = world("seeds")
    seeds: Seeds = {
        "token": _token_seeds(w),
        "invocation": _invocation_seeds(w),
        "envelope": _envelope_seeds(w),
        "checkpoint": _checkpoint_seeds(w),
        "proof": _proof_seeds(),
        "importer": {
            "raw": b"\x00" + w.export,
            "repaired": b"\x01" + w.export,
            **_importer_field_seeds(w),
        },
        "audit": _audit_seeds(w),
        "cli": _cli_seeds(w),
    }
    assert set(seeds) == set(TARGETS)
    return seeds


def _differences(seeds: Seeds, corpus: Path) -> list[str]:
    problems = []
    for target, files in seeds.items():
        directory = corpus / target
        present = {p.name for p in directory.iterdir()} if directory.is_dir() else set()
        for name in sorted(present - set(files)):
            problems.append(f"{target}/{name}: not a generated seed")
        for name, content in sorted(files.items()):
            path = directory / name
            if not path.is_file():
                problems.append(f"{target}/{name}: missing")
            elif path.read_bytes() != content:
                problems.append(f"{target}/{name}: differs")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz.seeds", description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    parser.add_argument("--corpus", type=Path, default=CORPUS_DIR)
    args = parser.parse_args(argv)
    seeds = build_seeds()
    if args.check:
        problems = _differences(seeds, args.corpus)
        for problem in problems:
            print(problem)
        return 1 if problems else 0
    for target, files in seeds.items():
        directory = args.corpus / target
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        for name, content in files.items():
            (directory / name).write_bytes(content)
    total = sum(len(files) for files in seeds.values())
    size = sum(len(c) for files in seeds.values() for c in files.values())
    print(f"wrote {total} seeds ({size} bytes) to {args.corpus}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
