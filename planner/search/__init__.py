"""Plan search: candidates, the integer program, plans over time, verdicts."""
