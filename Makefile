# Every target sets up .venv first if it is missing. CPU torch: the wheel on this machine.
PY      := .venv/bin/python
PIP     := .venv/bin/pip
STAMP   := .venv/.installed
TORCH   ?= torch==2.13.0

.PHONY: setup test demo bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[dev]"
	touch $(STAMP)

lint: setup
	.venv/bin/ruff check .

# Two test processes, the idle one taking work from the busy one (the long training tests come
# last): the suite waits on subprocesses, decoding and I/O as much as on the CPU. On a 2-core
# machine: 13:08 in one process, 12:14 in two, 11:25 in two with worksteal.
test: setup lint
	.venv/bin/pytest -n 2 --dist worksteal tests

demo: setup
	.venv/bin/fluxvit demo

bench: setup
	$(PY) benchmarks/run_all.py

clean:
	rm -rf .venv runs .pytest_cache .ruff_cache
