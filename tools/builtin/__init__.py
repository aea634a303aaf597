"""Example tools, one per module. Each module holds the function the sandbox calls and ``SPEC``,
its registration as it would be written in the gateway YAML (docs/tools.md shows it)."""
