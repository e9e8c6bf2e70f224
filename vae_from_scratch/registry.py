"""Registries: the classes that a configuration names, looked up by name.

The likelihood and the prior of a model are named in its configuration
(``likelihood="bernoulli"``, ``prior="mixture"``); each backend keeps a
:class:`Registry` of the classes that implement them, and a new one is added with its
``register`` method, used as a class decorator::

    @register_likelihood
    class Laplace(Likelihood):
        name = "laplace"
        ...
"""

from __future__ import annotations

from typing import Any


class Registry(dict):
    """name -> class, each a subclass of ``base`` with a class attribute ``name``."""

    def __init__(self, base: type, what: str) -> None:
        super().__init__()
        self.base, self.what = base, what

    def register(self, cls: Any) -> Any:
        """Add ``cls`` under ``cls.name``; returns it (so it serves as a class decorator)."""
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise TypeError(f"a {self.what} is a subclass of {self.base.__name__}, got {cls!r}")
        name = getattr(cls, "name", None)
        if not (isinstance(name, str) and name.isidentifier()):
            raise ValueError(f"a {self.what}'s name is an identifier such as 'laplace', got "
                             f"{name!r}")
        if self.get(name, cls) is not cls:
            raise ValueError(f"a {self.what} named {name!r} is registered already")
        self[name] = cls
        return cls
