"""Procedural worlds drawn by seed: shapes, binding, and the shift split, with their caption vocabularies."""
