"""Projection radiography (chest X-ray, CR/DX)."""
