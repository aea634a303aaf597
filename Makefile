.PHONY: run test bench
run:   ## set up and start the gateway on its embedded defaults
	bash scripts/run.sh
test:  ## set up and run lint, type checks and the whole test suite
	bash scripts/test.sh
bench: ## the load harness (simulator, baselines, gateway); options: bash scripts/bench.sh --help
	bash scripts/bench.sh $(ARGS)
