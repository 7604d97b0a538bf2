"""Flow, crosswalk and suite definitions read from mappings/ and expectations/, validated on load."""
