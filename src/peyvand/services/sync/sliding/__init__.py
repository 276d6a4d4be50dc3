"""Simplified sliding sync (MSC4186): see ``service.py``."""
