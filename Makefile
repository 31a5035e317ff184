# Two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= .lab

.PHONY: demo test lint bench bench-backup venv clean demo-down promtool openapi

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m payapi.lab.demo --dir $(DEMO_DIR)

demo-down: $(STAMP)
	$(BIN)/payapi lab down --dir $(DEMO_DIR)

# TEST_WORKERS=2 runs two pytest-xdist workers (each lab's tests on one worker, a
# module's tests in order: --dist loadgroup and the groups of tests/conftest.py): about
# 730-835 s instead of 916. Not the default yet: in two full runs a module's
# module-scoped fixture was set up twice (test_patroni once, test_vault_conjur_client
# once), so tests that build on the previous one failed. Why is not yet known.
TEST_WORKERS ?= 0
test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=30 -n $(TEST_WORKERS) --dist loadgroup tests

# promtool (Debian's `prometheus` package) checks deploy/prometheus/alerts.yml; the test
# that runs it skips where it is absent. Installed only when missing and we are root.
promtool:
	@if command -v promtool >/dev/null 2>&1; then \
		echo "promtool: $$(command -v promtool)"; \
	elif [ "$$(id -u)" != 0 ]; then \
		echo "promtool: absent, and not root: skipping (apt-get install prometheus)" >&2; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
		echo "promtool: absent, and no apt-get here: skipping" >&2; \
	elif apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends prometheus >/dev/null; then \
		echo "promtool: installed $$(command -v promtool)"; \
	else \
		echo "promtool: apt-get install prometheus failed: skipping" >&2; \
	fi

# The services' OpenAPI documents, from the code (a test checks they are up to date).
openapi: $(STAMP)
	mkdir -p docs/openapi
	for s in eapi sapi vault; do $(BIN)/payapi openapi $$s --out docs/openapi/$$s.json || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

# The benchmark drives load with wrk (Debian's `wrk` package), installed only when missing
# and we are root. Options pass through: make bench BENCH_ARGS="--duration 60 --json".
BENCH_ARGS ?=
bench: $(STAMP)
	@if ! command -v wrk >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends wrk >/dev/null \
			|| { echo "bench: apt-get install wrk failed" >&2; exit 2; }; \
		else \
			echo "bench: wrk is missing (apt-get install wrk, as root)" >&2; exit 2; \
		fi; \
	fi
	@$(BIN)/python benchmarks/api.py $(BENCH_ARGS)

# payapi's PostgreSQL backup/restore against pgBackRest (Debian's `pgbackrest`, installed
# only when missing and we are root) and pg_dump, on a private PostgreSQL 15 cluster.
# Options pass through: make bench-backup BENCH_BACKUP_ARGS="--scale 20 --rounds 1 --json".
BENCH_BACKUP_ARGS ?=
bench-backup: $(STAMP)
	@if ! command -v pgbackrest >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends pgbackrest >/dev/null \
			|| { echo "bench-backup: apt-get install pgbackrest failed" >&2; exit 2; }; \
		else \
			echo "bench-backup: pgbackrest is missing (apt-get install pgbackrest, as root)" >&2; \
			exit 2; \
		fi; \
	fi
	@$(BIN)/python benchmarks/backup.py $(BENCH_BACKUP_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info
