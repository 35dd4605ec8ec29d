"""edgedet.quantize stage."""
