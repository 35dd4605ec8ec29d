"""edgedet.train stage."""
