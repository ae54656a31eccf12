.DEFAULT_GOAL := help
.PHONY: help install services-up services-down services-status test demo lint

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

install: ## apt packages if missing, .venv with dev tools
	bash ops/install.sh --dev

services-up: ## start local Kafka 3.9 and PostgreSQL (no Docker), create topics
	bash ops/services.sh start

services-down: ## stop local Kafka and PostgreSQL
	bash ops/services.sh stop

services-status: ## show what runs
	bash ops/services.sh status

test: ## install, start services, run the whole test suite (ARGS="..." for pytest)
	bash ops/test.sh $(ARGS)

demo: ## run the embedded demo
	bash ops/demo.sh

lint: ## ruff lint and format check, import contracts
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/lint-imports
