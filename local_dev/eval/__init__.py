"""The accuracy evaluation: `make eval`, `make eval-live`, the sets they score and the measures they score with."""
