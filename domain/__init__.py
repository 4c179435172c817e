"""Pure domain logic: no I/O, no framework; every function here is unit-tested without servers."""
