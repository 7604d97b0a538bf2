"""erp-mes-sync: keeps a factory's ERP and MES in step and feeds a reporting warehouse."""
