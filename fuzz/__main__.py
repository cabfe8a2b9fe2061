"""``python -m fuzz {list | all | TARGET...} [--seconds N] [--jobs J] ...``: see
``fuzz._runner`` and ``docs/fuzzing.md``."""

from __future__ import annotations

import sys

from fuzz._runner import main

if __name__ == "__main__":
    sys.exit(main())
