"""payapi: a payment API platform that proves it recovers from disaster."""

__version__ = "0.1.0"
