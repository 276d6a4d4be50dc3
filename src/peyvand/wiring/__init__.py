"""The composition root's parts (``app.py`` runs them): each builder makes one area's
components, with all they need in their constructors, from the components before it."""
