"""Shared structured logging for TTG."""
