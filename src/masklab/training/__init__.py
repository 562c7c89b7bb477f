"""LightningModules and training helpers."""
