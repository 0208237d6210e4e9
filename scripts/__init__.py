"""Load generation, rule checking and process sampling for the stress test and the soak."""
