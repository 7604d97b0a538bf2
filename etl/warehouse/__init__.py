"""The reporting warehouse: its refresh from the synced tables and the material history."""
