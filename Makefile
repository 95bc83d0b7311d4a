# The README's two set-up commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DB     ?= stateward.db

.PHONY: demo test test-long lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when the project's metadata changed.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(VENV)/.installed $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(VENV)/.installed $(VENV)/.installed-test $@

EXAMPLES := examples/resumable_job.py examples/watermark.py examples/templated.py

# Runs every example twice on a fresh $(DB), then lists the state they left:
# the second watermark run continues from the first one's watermark.
demo: $(VENV)/.installed
	rm -f $(DB) $(DB)-wal $(DB)-shm
	@for round in 1 2; do \
	  for example in $(EXAMPLES); do \
	    echo; echo "=== round $$round: stateward run $$example"; \
	    $(BIN)/stateward run $$example --db $(DB) || exit 1; \
	  done; \
	done
	@echo; echo "=== stateward state list"
	$(BIN)/stateward state list --db $(DB)

# pytest exits 5 when it collected no test: that is a failure, never a pass.
test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -m "not long" -p no:cacheprovider; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-long: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -p no:cacheprovider; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy stateward

bench: $(VENV)/.installed-test
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache $(DB) $(DB)-wal $(DB)-shm
