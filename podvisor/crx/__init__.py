"""Podvisor."""
