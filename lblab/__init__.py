"""LBLab's Django project: settings (env-driven), ASGI routing, URLs."""
