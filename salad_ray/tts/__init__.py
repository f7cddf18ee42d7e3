"""Text-to-speech backends behind one interface (see base.py)."""
