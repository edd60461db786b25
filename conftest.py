"""Settings for every test folder (tests/, src/ doctests, plugins/*/tests)."""

from hypothesis import settings

# No per-example deadline: CI machines are shared and noisy, and a slow example is not a wrong one.
settings.register_profile("agemetric", deadline=None)
settings.load_profile("agemetric")
