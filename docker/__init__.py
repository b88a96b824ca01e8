"""Building and running LBLab on a container engine: images.py (./lab images), engine.py."""
