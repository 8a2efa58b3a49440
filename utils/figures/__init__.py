"""The figures of visualize.py, one module each (perturbation, ascent, samples, neighbours,
report), and what they share (context)."""
