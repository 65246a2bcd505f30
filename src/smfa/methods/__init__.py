"""Unlearning methods, one file each, registered by name (``smfa unlearn --method NAME``)."""

from smfa.methods.base import Method, MethodConfig, get_method, method_names, register_method

__all__ = ["Method", "MethodConfig", "get_method", "method_names", "register_method"]
