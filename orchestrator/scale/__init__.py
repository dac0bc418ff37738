"""Past one machine: whole stacks replicated on a cluster (Ray Serve)."""
