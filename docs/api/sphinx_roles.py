"""A griffe extension for the API reference (mkdocs.yml loads it): groksweep's docstrings name
other objects with Sphinx roles (:func:`run`, :class:`~groksweep.Sweep`, :mod:`groksweep.plot`);
this turns each into a mkdocstrings cross-reference, resolved in the docstring's own scope
(``scoped_crossrefs``), so that ``mkdocs build --strict`` fails on a name that no longer exists.

A target outside groksweep (``matplotlib.figure.Figure``) or private (a ``_name``) is rendered
as code, without a link: the site documents public groksweep objects only.

The docstrings are plain text with math in it (``L*``, ``|beta*|^2``): a single asterisk that
does not delimit an emphasised word or phrase (``*not*``) is escaped, so that Markdown shows it
as written instead of setting the text between two of them in italics.
"""

from __future__ import annotations

import builtins
import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|attr|data|obj|exc|const):`(~?)([\w.]+)(\(\))?`")


EXTERNAL = {"jax", "jnp", "np", "numpy", "xr", "xarray", "matplotlib", "optax", "eqx", "equinox"}
"""Other libraries' names, which the site does not document: rendered as code."""
CODE_SPAN = re.compile(r"(`+[^`]*?`+)")
EMPHASIS = re.compile(r"((?<![\w*\\])\*(?=[^\s*])[^*\n]*?(?<=[^\s*\\])\*(?![\w*]))")
STAR = re.compile(r"(?<![*\\])\*(?!\*)")


def plain_stars(text: str) -> str:
    """``text`` with every single ``*`` escaped, but in code spans, indented code and around
    emphasis."""
    lines = []
    for line in text.split("\n"):
        if not line.startswith("    "):
            parts = CODE_SPAN.split(line)
            for i in range(0, len(parts), 2):  # odd parts are code spans
                pieces = EMPHASIS.split(parts[i])
                pieces[::2] = [STAR.sub(r"\\*", piece) for piece in pieces[::2]]
                parts[i] = "".join(pieces)
            line = "".join(parts)
        lines.append(line)
    return "\n".join(lines)


def canonical(obj: griffe.Object, target: str) -> str | None:
    """The path under which the object ``target`` names in ``obj``'s scope is documented
    (through imports and inherited members), or None when griffe cannot find it."""
    first, _, rest = target.partition(".")
    scope: Any = obj
    while scope is not None and first not in (scope.all_members if scope.is_class else {}):
        scope = scope.parent
    try:
        if first == "groksweep":
            path = first
        elif scope is not None:  # a member of an enclosing class, perhaps inherited
            path = f"{scope.path}.{first}"
        else:
            path = obj.resolve(first)
        node: Any = obj.modules_collection[path]
        for part in rest.split(".") if rest else ():
            members = node.all_members if node.is_class else node.members
            node = members[part]
        return node.final_target.canonical_path if node.is_alias else node.canonical_path
    except Exception:  # an unresolved name: left to mkdocstrings, which reports it
        return None


def crossref(obj: griffe.Object, match: re.Match[str]) -> str:
    short, target, call = match.group(1), match.group(2), match.group(3) or ""
    title = target.rsplit(".", 1)[-1] if short else target
    first = target.split(".", 1)[0]
    if first in EXTERNAL or any(part.startswith("_") for part in target.split(".")):
        return f"`{title}{call}`"
    path = canonical(obj, target)
    if path is None and "." not in target and hasattr(builtins, target):
        return f"`{title}{call}`"  # ValueError, dict
    return f"[`{title}{call}`][{path or target}]"


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles in every docstring as cross-references."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        self.rewrite(obj)

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        self.rewrite(pkg)  # the package itself is not among the objects

    def rewrite(self, obj: griffe.Object) -> None:
        if obj.docstring is not None:
            text = ROLE.sub(lambda m: crossref(obj, m), obj.docstring.value)
            obj.docstring.value = plain_stars(text)
