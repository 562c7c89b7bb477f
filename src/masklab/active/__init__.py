"""Active learning: which unlabelled images (or regions) to label next, and the simulation that checks it."""
