"""The ``pds`` command line: a thin client of the public ``pds`` API."""
