"""Podvisor: Kubernetes pods as lightweight VMs."""

__version__ = "0.1.0"
