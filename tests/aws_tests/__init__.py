"""Tests of the AWS backend against a moto server on 127.0.0.1 (see conftest.py)."""
