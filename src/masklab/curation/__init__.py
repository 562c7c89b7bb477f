"""Curation: out-of-fold predictions and what is read from them (label errors, ...), keyed by sample id."""
