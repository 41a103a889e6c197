# Everyday commands. The README's two set-up commands stay the reference; these are
# shortcuts over the same venv (.venv). `make help` lists them.
PY := .venv/bin/python
PG_URL ?= postgresql://root@127.0.0.1:5432/postgres
VERSION ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)

.PHONY: help install run demo test unit integration e2e deploy lint format typecheck check \
        bench bench-smoke migrate protos clean-test-dbs test-newest \
        client-wheel proto-release

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-15s %s\n", $$1, $$2}'

install:  ## create .venv with the registry and what tests need
	python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]'

run:  ## serve on the embedded SQLite store (registry-data/)
	.venv/bin/registry serve

demo:  ## a small national year on the embedded store, printed as tables
	.venv/bin/registry demo

test: check  ## exactly what .ci/run runs after the install: lint, format, types, the suite
	$(PY) -m pytest -q

test-newest:  ## lint, types and the suite in .venv-newest, every dependency upgraded to its newest allowed version
	python3 -m venv .venv-newest && .venv-newest/bin/pip install -q --upgrade --upgrade-strategy eager -e '.[test]'
	.venv-newest/bin/pip list --format=freeze | grep -iE '^(sqlalchemy|alembic|psycopg|grpcio|protobuf|eventsourcing|mypy|ruff|msgspec)=='
	.venv-newest/bin/ruff check . && .venv-newest/bin/ruff format --check . && .venv-newest/bin/mypy
	.venv-newest/bin/python -m pytest -q

unit:  ## the fast tests (no database, no network)
	$(PY) -m pytest -q tests/unit

integration:  ## the application on in-memory, SQLite and PostgreSQL
	$(PY) -m pytest -q tests/integration

e2e:  ## real gRPC channels, real processes
	$(PY) -m pytest -q tests/e2e

deploy:  ## the container image, compose and Kubernetes files
	$(PY) -m pytest -q tests/deploy

lint:  ## ruff's rules
	.venv/bin/ruff check .

format:  ## rewrite the tree in ruff's format (CI checks it)
	.venv/bin/ruff format . && .venv/bin/ruff check --fix .

typecheck:  ## mypy --strict over registry, services, migrations
	.venv/bin/mypy

check: lint typecheck  ## lint, format check and types, as .ci/run does before the suite
	.venv/bin/ruff format --check .

bench:  ## the full benchmark suite on a fresh PostgreSQL database (15-25 minutes)
	.venv/bin/registry bench

bench-smoke:  ## every benchmark scenario at toy sizes (1-2 minutes)
	.venv/bin/registry bench --smoke

migrate:  ## upgrade the configured database to the latest schema
	.venv/bin/registry migrate

protos:  ## regenerate the gRPC stubs after editing protos/
	.venv/bin/pip install -q -e .

client-wheel:  ## build the slim carbon-registry-client wheel (client, stubs with .pyi) into dist/
	$(PY) -m pip wheel -q --no-deps clients/python -w dist

proto-release:  ## at a release: write protos/releases/v$(VERSION).binpb, the image `buf breaking` compares with
	$(PY) -m grpc_tools.protoc -Iprotos -I"$$($(PY) -c 'import grpc_tools, os; print(os.path.dirname(grpc_tools.__file__))')/_proto" \
	  --include_imports --descriptor_set_out=protos/releases/v$(VERSION).binpb $$(cd protos && ls registry/v1/*.proto)

clean-test-dbs:  ## drop registry_test_* / registry_bench_* databases a killed run left behind
	psql "$(PG_URL)" -Atc "SELECT datname FROM pg_database WHERE datname ~ '^registry_(test|bench)_'" \
	  | while read -r db; do psql "$(PG_URL)" -qc "DROP DATABASE IF EXISTS \"$$db\" WITH (FORCE)"; done
