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

SW := $(BIN)/stateward

# Runs each example on a fresh $(DB) and says before each run what it shows, then
# lists the state they left.
demo: $(VENV)/.installed
	rm -f $(DB) $(DB)-wal $(DB)-shm
	@echo; echo "=== 1. resumable_job.py, run 'nightly': try 1 submits a job, keeps its id in task state and crashes; try 2 finds the id and reattaches"
	$(SW) run examples/resumable_job.py --run-id nightly --db $(DB)
	@echo; echo "=== 2. run 'nightly' again: the runtime recorded that run as succeeded at try 2, so resuming it runs nothing and submits nothing (docs/runs.md)"
	$(SW) run examples/resumable_job.py --run-id nightly --db $(DB)
	@echo; echo "=== 2b. what try 1 printed, kept with its record in the database (stateward logs)"
	$(SW) logs resumable_job nightly run_report --try 1 --db $(DB)
	@echo; echo "=== 2c. clear the instance (its task state too) and run 'nightly' again: tries continue, try 3 finds no job id and submits anew, try 4 reattaches"
	$(SW) runs clear resumable_job nightly --db $(DB)
	$(SW) run examples/resumable_job.py --run-id nightly --db $(DB)
	@echo; echo "=== 3. watermark.py: the load starts at the watermark kept on asset 'orders' (none yet) and moves it"
	$(SW) run examples/watermark.py --db $(DB)
	@echo; echo "=== 4. watermark.py again, a new run: asset state outlives runs, so it continues from 5"
	$(SW) run examples/watermark.py --db $(DB)
	@echo; echo "=== 5. templated.py: the command is rendered from state (the 'info: ... stderr' lines are its output); try 2 renders the job id try 1 kept"
	$(SW) run examples/templated.py --db $(DB) --show-results
	@echo; echo "=== 6. external_job.py: ResumableJobOperator keeps the job id in task state; its retry polls the same job"
	$(SW) run examples/external_job.py --db $(DB) --show-results
	@echo; echo "=== stateward state list: templated_export has no task state here, as its extract task clears its state on success (clear_state_on_success=True)"
	$(SW) state list --db $(DB)

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
