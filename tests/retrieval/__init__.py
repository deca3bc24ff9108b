"""Retrieval tests: a package, so `test_contract.py` and `test_postgres.py` here do not
clash with the modules of the same name under tests/stores/."""
