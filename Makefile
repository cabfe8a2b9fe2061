# Fuzzing (docs/fuzzing.md). Every target runs under atheris in its own process; findings
# are copied to tests/regress/<target>/, where pytest replays them.
#
#   make fuzz                      each target for FUZZ_SECONDS (300), FUZZ_JOBS (2) at a time
#   make fuzz FUZZ_SECONDS=3600    longer (the nightly job)
#   make fuzz FUZZ_TARGETS="token cli"
#   make fuzz-brief                what CI runs: each target for a few seconds
#   make fuzz-seeds                regenerate fuzz/corpus/ after a format change

PYTHON ?= python
FUZZ_SECONDS ?= 300
FUZZ_JOBS ?= 2
FUZZ_TARGETS ?= all
FUZZ_WORKDIR ?=

FUZZ_FLAGS = --seconds $(FUZZ_SECONDS) --jobs $(FUZZ_JOBS) $(if $(FUZZ_WORKDIR),--workdir $(FUZZ_WORKDIR))

.PHONY: fuzz fuzz-brief fuzz-seeds fuzz-list

fuzz:
	$(PYTHON) -m fuzz $(FUZZ_TARGETS) $(FUZZ_FLAGS)

fuzz-brief:
	$(PYTHON) -m pytest -q tests/test_fuzz_brief.py tests/test_fuzz_regress.py

fuzz-seeds:
	$(PYTHON) -m fuzz.seeds

fuzz-list:
	$(PYTHON) -m fuzz list
