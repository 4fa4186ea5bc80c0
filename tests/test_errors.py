"""The exception tree drawn in errors.py is the tree the code has."""

from __future__ import annotations

import importlib
import pkgutil

import newsletter
from newsletter import errors


def every_subclass(root: type) -> set[type]:
    found: set[type] = set()
    for cls in root.__subclasses__():
        found |= {cls, *every_subclass(cls)}
    return found


def test_the_docstring_tree_names_every_error_class_of_the_package() -> None:
    for module in pkgutil.walk_packages(newsletter.__path__, "newsletter."):
        # (tasks.entry is Celery's entry point: it reads the environment when imported)
        if ".migrations" not in module.name and module.name != "newsletter.tasks.entry":
            importlib.import_module(module.name)
    ours = {
        c for c in every_subclass(errors.NewsletterError) if c.__module__.startswith("newsletter")
    }
    tree = errors.__doc__ or ""
    missing = sorted(c.__name__ for c in ours if f" {c.__name__} " not in tree)
    assert missing == []
    assert len(ours) > 20
