"""The `whospoke` command line."""
