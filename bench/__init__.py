"""The pds benchmark suite: every figure of the performance record beside its baseline.

Run ``python -m bench`` from the repository root (``--quick`` for the small CI version,
``--out FILE`` for JSON, ``--only NAME`` for one figure). See ``bench/README.md``.
"""
