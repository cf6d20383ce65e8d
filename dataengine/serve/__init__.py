"""`de serve`: the web browser over the catalog and the runs."""
