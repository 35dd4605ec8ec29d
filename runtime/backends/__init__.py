"""Inference backends, one class per file, each imported lazily."""
