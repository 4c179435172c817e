"""Sample data for the demo's send commands (and the tests and benchmarks): generators, no I/O."""
