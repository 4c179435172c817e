"""The harness of the tests and benchmarks (never shipped in the worker's image): worker
processes, fresh names on the stack, producing and reading, seeding and counting."""
