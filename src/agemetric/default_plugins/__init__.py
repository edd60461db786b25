"""The plugins agemetric ships: the paper's method plus what the quick preset needs.

They are registered exactly like third-party plugins (see `agemetric.plugins.DEFAULT_PLUGINS`).
"""
