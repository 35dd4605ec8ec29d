"""edgedet.model stage."""
