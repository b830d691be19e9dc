# The front door: `make demo` runs the main job, `make test` the tests. Each does all the set-up it needs first
# (scripts/setup.sh: Debian packages, a running Docker engine, the pinned .venv) and skips what is already done,
# so a second run, or a run after a reboot (the engine is started again), goes straight to work.
.PHONY: setup demo test lint typecheck lock

VENV := .venv

setup:
	@bash scripts/setup.sh

demo: setup
	@$(VENV)/bin/cortexbox demo

test: setup lint
	@$(VENV)/bin/python -m pytest -q

lint: setup
	@$(VENV)/bin/ruff check .
	@bash scripts/typecheck.sh

# Re-pin the dev environment after a deliberate upgrade (then run `make test` and commit constraints.txt).
lock: setup
	@{ grep '^#' constraints.txt; $(VENV)/bin/pip freeze --exclude-editable | grep -v '^-e' | LC_ALL=C sort -f; } > constraints.txt.new
	@mv constraints.txt.new constraints.txt
	@echo "constraints.txt rewritten from $(VENV)"
