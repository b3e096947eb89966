"""Cost of one engine step, op by op, from its sources."""
