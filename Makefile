.PHONY: run test bench
run:   ## set up and start the gateway on its embedded defaults
	bash scripts/run.sh
test:  ## set up and run lint, type checks and the whole test suite
	bash scripts/test.sh
bench: ## the load harness (simulator, baselines, gateway); options: bash scripts/bench.sh --help
	bash scripts/bench.sh $(ARGS)
.PHONY: chaos soak
MINUTES ?= 20
chaos: ## faults under load through two replicas sharing Redis, every request accounted for; options: ARGS=--help
	bash scripts/bootstrap.sh && PATH="$$HOME/.local/bin:$$PATH" uv run python -m tests.chaos $(ARGS)
soak:  ## the soak (MINUTES=20): memory and descriptors flat, aborted streams leave nothing, overload refused
	bash scripts/bootstrap.sh && PATH="$$HOME/.local/bin:$$PATH" uv run python -m tests.chaos soak --minutes $(MINUTES) $(ARGS)
