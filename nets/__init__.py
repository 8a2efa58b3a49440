"""The networks of every family, each an nn.Module whose sizes are constructor arguments:
ie534.py (the assignment's), lessons.py (the other lessons'), simclr.py, and base.py (what
they share). models.py looks them up by family name."""
