# Everything sets itself up: a fresh machine needs only Python 3.11 and make.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CASES ?= 200
## Two test workers per core, at most four: half of a test's time is spent waiting (on a
## server starting, a process, a condition), and a second worker per core fills it.
TEST_WORKERS ?= $(shell echo $$(( 2 * $$(nproc) )))

.PHONY: run demo test pytest lint lint-code dependency-audit tools bench fault fuzz soak clean lock deploy-test catalogues browser-deps c-build-deps

# Installs exactly what requirements-dev.lock pins (hash-checked), then cbcm itself, with
# verify's two C modules (ADR 33) built in place (again whenever their sources change).
$(STAMP): pyproject.toml requirements-dev.lock setup.py services/audit/_hashing.c services/event_store/_log_reader.c | c-build-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

## The main job: the whole stack on embedded defaults (nats-server, relay, projections, HTTP).
run: $(STAMP)
	$(BIN)/cbcm serve

## A demo network and CASES cases in the event store (./.cbcm), through the real application.
demo: $(STAMP)
	$(BIN)/cbcm demo --cases $(CASES)

## The test suite: lint, types and every test but the benchmarks, all at once. The checks
## (about 10 s of CPU, the dependency audit mostly waiting on the network) run beside pytest
## instead of before it: a failing check still fails `make test`, each line of output whole.
## Bytecode is written first, once (tests/tools/warm_bytecode.py: the modules' and pytest's
## rewritten test modules', about 6 s of CPU), and kept (__pycache__, ignored by git) even
## where PYTHONDONTWRITEBYTECODE is set: each test worker otherwise compiles every module and
## rewrites every test module again, about 7 s of CPU per worker and run.
test: export PYTHONDONTWRITEBYTECODE :=
test: $(STAMP) tools browser-deps
	@$(BIN)/python tests/tools/warm_bytecode.py
	@$(MAKE) --no-print-directory -j3 --output-sync=line lint-code dependency-audit pytest

## The tests' temporary files (every tmp_path, the SQLite stores, nats-server's JetStream, the
## throwaway PostgreSQL) go to a tmpfs where the machine has one at /dev/shm: a SQLite commit
## waits for its fsync on a disk (about 7 ms here, shared), not in memory, and no test of
## `make test` is about surviving a power cut (those of `make fault` are: they keep the disk).
## `make test TEST_TMPDIR=` keeps the usual TMPDIR. Only where it has 2 GiB free (a container's
## /dev/shm is often 64 MiB: the suite would fail there for want of space).
TEST_TMPDIR ?= $(shell test -d /dev/shm -a -w /dev/shm && test "$$(df -Pk /dev/shm | awk 'NR==2 {print $$4}')" -ge 2097152 && echo /dev/shm/cbcm-tests-$$(id -u))

pytest: $(STAMP)
	$(if $(TEST_TMPDIR),install -d -m 700 $(TEST_TMPDIR))
	$(if $(TEST_TMPDIR),TMPDIR=$(TEST_TMPDIR)) $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --maxprocesses=4 --dist worksteal

## Debian tools the suite drives (CI runs as root): LibreOffice opens the quarterly report.
tools:
	command -v soffice >/dev/null || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends libreoffice-calc-nogui)

## The dependency audit mostly waits on the network (one request per package): it runs beside
## the other checks, each one's output kept together.
lint: $(STAMP)
	@$(MAKE) --no-print-directory -j2 --output-sync=target lint-code dependency-audit

lint-code: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/deptry .

dependency-audit: $(STAMP)
	$(BIN)/python tests/tools/audit_dependencies.py

## Benchmarks print figures next to a baseline measured in the same run (not part of `make test`),
## then one table of them all (cbcm bench); `make bench BENCH_ARGS=--quick` for a shorter run.
bench: $(STAMP)
	$(BIN)/cbcm bench $(BENCH_ARGS)

## Fault tests: NATS nodes stopped, PostgreSQL restarted, services killed under load; each run
## ends by comparing every read model with a fresh rebuild (not part of `make test`).
fault: $(STAMP)
	$(BIN)/python -m pytest -q -m fault tests/fault tests/integration/test_crash_recovery.py \
		tests/integration/test_shared_projector.py

## The rest of the schemathesis matrix: the coverage phase as a focal point and as an auditor
## (the default suite runs it as the coordinator; docs/testing.md). Not part of `make test`.
fuzz: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) -m fuzz tests/fuzz

## Long property-based runs: every projection against thousands of command sequences and
## schema-valid messages (not part of `make test`, which runs a bounded number of each).
soak: $(STAMP)
	$(BIN)/python -m pytest -q -m soak tests

## The image's install steps (deploy/install.sh, from requirements.lock) on a clean Debian 12 made
## with debootstrap, as root (not part of `make test`: it downloads Debian and every locked wheel).
deploy-test: $(STAMP)
	command -v debootstrap >/dev/null || apt-get install -y debootstrap
	$(BIN)/python -m pytest -q -m deploy tests/deploy

clean:
	rm -rf $(VENV) .cbcm .pytest_cache .mypy_cache .ruff_cache

## The public pages' texts: extract them from the templates and code, then update every
## language's catalogue (new texts empty, removed ones dropped; translate, then make test).
catalogues: $(STAMP)
	$(BIN)/pybabel extract -F services/api/pages/babel.cfg -k N_ --no-location --omit-header --no-wrap -o services/api/pages/locales/messages.pot .
	for lang in fr ar es pt sw; do $(BIN)/pybabel update --no-wrap --ignore-obsolete --no-fuzzy-matching -D messages -l $$lang -i services/api/pages/locales/messages.pot -d services/api/pages/locales; done
	$(BIN)/pybabel extract -F services/api/console/babel.cfg -k N_ --no-location --omit-header --no-wrap -o services/api/console/locales/console.pot .
	for lang in fr; do test -f services/api/console/locales/$$lang/LC_MESSAGES/console.po || $(BIN)/pybabel init --no-wrap -D console -l $$lang -i services/api/console/locales/console.pot -d services/api/console/locales; $(BIN)/pybabel update --no-wrap --ignore-obsolete --no-fuzzy-matching -D console -l $$lang -i services/api/console/locales/console.pot -d services/api/console/locales; done

## The browser tests' tools (the tests install them too when missing, never skip): Debian's
## chromium (as root, as CI runs) and axe-core from tests/browser/package-lock.json.
## Verify's C modules (ADR 33) need a C compiler and OpenSSL's and SQLite's headers: installed
## here where they are missing and apt-get can (CI runs as root). Elsewhere cbcm installs
## without the modules and verify runs the Python code they replace (the same findings, slower).
c-build-deps:
	@if command -v cc >/dev/null && test -f /usr/include/openssl/evp.h && test -f /usr/include/sqlite3.h; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends gcc libc6-dev libssl-dev libsqlite3-dev; \
	else echo "note: no C compiler or no OpenSSL/SQLite headers: cbcm audit verify will run its Python code (slower)"; fi

browser-deps:
	test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y chromium)
	test -f tests/browser/node_modules/axe-core/axe.min.js || npm ci --ignore-scripts --no-audit --prefix tests/browser

## Pin every dependency with its hashes: requirements.lock (what the services need) and
## requirements-dev.lock (with the dev and embedded extras: what make and CI install).
lock:
	$(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links --output-file requirements.lock pyproject.toml
	$(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links --extra dev --extra embedded --output-file requirements-dev.lock pyproject.toml
