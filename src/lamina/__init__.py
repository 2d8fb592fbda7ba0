"""lamina: build OCI images from Dockerfiles without a daemon."""

__version__ = "0.1.0"
