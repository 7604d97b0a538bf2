"""The command line, ``python -m etl``."""
