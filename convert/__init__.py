"""edgedet.convert stage."""
