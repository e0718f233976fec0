"""The bundle format: what a model bundle holds (``format``) and the bundle on disk (``bundle``)."""
