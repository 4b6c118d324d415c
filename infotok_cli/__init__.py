"""infotok: compress videos into adaptive discrete tokens (InfoTok) and back."""

__version__ = "0.1.0"
