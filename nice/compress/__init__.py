"""The compression engine: mask -> mixed-resolution image -> codec -> prediction guard."""
