.PHONY: run test bench
run:   ## set up and start the gateway on its embedded defaults
	bash scripts/run.sh
test:  ## set up and run lint, type checks and the whole test suite
	bash scripts/test.sh
