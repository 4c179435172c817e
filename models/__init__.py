"""Typed records that travel on the topics."""
from models.dead_letter import DeadLetter
from models.transaction import Transaction

__all__ = ["DeadLetter", "Transaction"]
