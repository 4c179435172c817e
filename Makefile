# Entry points; the README names them. Every target installs what it needs first.
.PHONY: demo test unit integration setup up down status lint typecheck format clean bench bench-quix

demo:            ## fresh machine -> stack, worker, sample data, result
	scripts/demo

test: setup      ## fresh machine -> stack + unit and integration tests
	scripts/stack up
	.venv/bin/pytest tests

unit: setup
	.venv/bin/pytest tests/unit

integration: setup
	scripts/stack up
	.venv/bin/pytest tests/integration

setup:
	scripts/bootstrap

bench: setup bench-quix  ## the whole-pipeline benchmark on the local stack -> bench/results/ (BENCH_ARGS="--events 20000")
	.venv/bin/pip install -q -c requirements.lock -e '.[bench]'
	scripts/stack up
	.venv/bin/python -m bench.pipeline $(BENCH_ARGS)

# The Quix Streams contender's own virtualenv (no faust in it); remade when its pins change.
bench-quix: bench/quix/.venv/.installed
bench/quix/.venv/.installed: bench/quix/requirements.txt
	python3.11 -m venv bench/quix/.venv
	bench/quix/.venv/bin/pip install -q --upgrade pip==24.3.1
	bench/quix/.venv/bin/pip install -q --no-deps -r bench/quix/requirements.txt
	bench/quix/.venv/bin/pip check
	touch $@

up: setup
	scripts/stack up

down:
	-scripts/worker stop
	scripts/stack down

status:
	@scripts/stack status; scripts/worker status

format:          ## the fixes ruff can make by itself (imports, the project's rules)
	.venv/bin/ruff check --fix app agents models domain devtools tests bench scripts

lint:
	.venv/bin/ruff check app agents models domain devtools tests bench scripts

typecheck:
	.venv/bin/mypy

clean: down
	rm -rf .stack var .venv
