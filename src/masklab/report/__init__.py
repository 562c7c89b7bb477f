"""Pictures for people: mask overlays, preview grids (and later plots and the HTML explorer)."""
