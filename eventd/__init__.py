"""eventd: a self-hosted, Lambda-style event-routing daemon."""

__version__ = "0.1.0"
