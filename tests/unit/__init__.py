"""The pure core: policy, grammar, transitions, builders, the HTTP edge; no process, no network."""
