"""Demo databases: the ERP and MES schemas and a deterministic synthetic factory to fill them."""
