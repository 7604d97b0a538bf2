"""The sync steps (extract, stage, validate, load, deletes, quarantine, ledger, state) and the runner composing them."""
