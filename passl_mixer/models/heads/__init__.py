"""Registered at import by passl_mixer.models."""
