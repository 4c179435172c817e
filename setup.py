"""Metadata lives in setup.cfg; this file lets `pip install -e .` work with older pips."""
from setuptools import setup

setup()
