"""Shared by every service: server bootstrap, image decoding, logging."""
