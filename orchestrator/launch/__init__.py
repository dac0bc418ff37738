"""Command lines for engines we launch as a model's worker instead of running our own."""
