"""Running a model over a dataset: metrics, the per-sample table, printing and writing them."""
