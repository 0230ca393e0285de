"""The vocabulary every other package speaks: domain types, error codes, settings. No I/O, no models."""
