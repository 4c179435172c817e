"""Faust agents: thin loops that take a batch, call the domain and the adapters, send, ack."""
