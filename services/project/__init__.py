"""A project folder: one organisation's documents, templates, router data and served state."""
