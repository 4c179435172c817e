"""Commands run as `faust -A app.main <command>`; one module per domain, found by autodiscovery."""
