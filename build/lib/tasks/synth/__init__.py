"""A synthetic source in the public layout: simulated players, realistic frames, seed labels."""
