# Every target sets up its own virtualenv (.venv) first; set-up is skipped when pyproject.toml
# has not changed since the last install.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench serve lint screenshots setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,lab,semantic,postgres]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/digest init
	$(BIN)/digest db upgrade
	$(BIN)/digest run

# Three pytest workers on two cores: some tests mostly wait (the scheduler's minute boundaries,
# SMTP timeouts), and a third worker keeps both cores busy meanwhile (408 tests: 8:47 with two, 7:49 with three).
test: $(STAMP)
	$(BIN)/ruff check digest digest_lab tests
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q -n 3 --dist worksteal

bench: $(STAMP)
	$(BIN)/digest bench --users 10000 --papers 2000 --scale 1000,10000,100000 --compare f1f4b40 --repeat 2

serve: $(STAMP)
	$(BIN)/digest init
	$(BIN)/digest db upgrade
	$(BIN)/digest serve

lint: $(STAMP)
	$(BIN)/ruff check digest digest_lab tests
	$(BIN)/lint-imports --no-cache

# The README's pictures of a digest of real data (../shared/data/arxiv-daily), taken in headless chromium.
screenshots: $(STAMP)
	$(BIN)/python docs/screenshots.py

clean:
	rm -rf $(VENV) var .pytest_cache
