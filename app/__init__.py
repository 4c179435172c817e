"""The Faust application: settings, topics, adapters and the App that `faust -A app.main` runs."""
