"""The layer cache kept in a registry repository (``--cache-repo``): its entries and their maintenance."""
