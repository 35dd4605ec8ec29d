"""edgedet.devices stage."""
