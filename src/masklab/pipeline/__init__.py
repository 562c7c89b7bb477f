"""The DVC pipeline's plain parts: params.yaml as Hydra overrides, and the files stages leave for DVC."""
