"""Command functions: the Hydra edge. Each takes a composed DictConfig and calls plain-value code."""
