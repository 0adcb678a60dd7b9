"""Classes written in a notebook, as one program file that runs them as they ran there.

Notebook 06 has the learner build a server class cell by cell, then run it as a program of its
own (``python my_server.py --port 9000``). :func:`program_source` writes that file: the class,
with the methods of the notebook classes it builds on, and everything of the notebook that it
uses (imports, module-level functions and classes, constants such as ``MAX_LINE`` or a
``re.compile(...)``), found by reading which global names its code loads. The learner's
``# TODO`` notes are left out. A value that cannot be written back as code (an open file, say)
is refused with a message naming it.
"""

from __future__ import annotations

import ast
import dis
import inspect
import re
import textwrap
import types
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["program_source"]

_TODO = re.compile(r"#\s*TODO\b")  # a TODO comment, on a line of its own or after code


def _without_todos(source: str) -> str:
    """``source`` without its TODO comments, each with the comment lines right under it.

    >>> print(_without_todos("x = 1  # TODO: check\\n# TODO: more\\n# still the note\\ny = 2\\n"))
    x = 1
    y = 2
    <BLANKLINE>
    """
    kept, in_todo = [], False
    for line in source.splitlines(keepends=True):
        todo = _TODO.search(line)
        in_todo = todo is not None or (in_todo and line.lstrip().startswith("#"))
        if not in_todo:
            kept.append(line)
        elif todo and line[: todo.start()].strip():  # the code before the comment stays
            kept.append(line[: todo.start()].rstrip() + "\n")
    return "".join(kept)


def _own_members(cls: type, module: str) -> dict[str, Any]:
    """The attributes ``cls`` and its bases defined in ``module``, the newest last."""
    members: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if klass.__module__ == module:
            members.update(vars(klass))
    return members


def _base(cls: type, module: str) -> tuple[str, str | None]:
    """How the program names the first base of ``cls`` that ``module`` did not define, and
    the module it must import for that (``None`` for a builtin such as ``object``)."""
    base = next(klass for klass in cls.__mro__ if klass.__module__ != module)
    if base.__module__ == "builtins":
        return base.__name__, None
    package = base.__module__.partition(".")[0]  # asyncio.protocols.Protocol is asyncio.Protocol
    return f"{package}.{base.__name__}", package


def _class_source(name: str, base: str, members: Mapping[str, Any]) -> str:
    """A class statement named ``name`` on ``base`` with ``members`` (the methods and
    attributes of the notebook's classes it is made of), its attributes first, as a reader
    expects."""
    header = f"class {name}:" if base == "object" else f"class {name}({base}):"
    attributes, methods = "", []
    for attribute, value in members.items():
        if inspect.isfunction(value):
            method = _without_todos(textwrap.dedent(inspect.getsource(value)))
            methods.append(textwrap.indent(method, "    "))
        elif not attribute.startswith("__"):
            attributes += f"    {attribute} = {value!r}\n"
    body = "\n".join(part for part in [attributes, *methods] if part)
    return f"{header}\n" + (body or "    pass\n")


def _global_names(code: types.CodeType) -> list[str]:
    """The global names ``code`` reads, and the code defined inside it reads."""
    names = [i.argval for i in dis.get_instructions(code) if i.opname == "LOAD_GLOBAL"]
    for inner in code.co_consts:  # functions and comprehensions defined inside
        if isinstance(inner, types.CodeType):
            names += _global_names(inner)
    return names


def _is_literal(value: object) -> bool:
    """Whether ``repr(value)`` reads back as ``value`` without running code."""
    try:
        return bool(ast.literal_eval(repr(value)) == value)
    except (ValueError, SyntaxError):
        return False


def program_source(
    classes: Mapping[str, type], namespace: Mapping[str, Any], imports: Iterable[str] = ()
) -> str:
    """One file with ``classes`` (name in the file: class) and every import, function, class
    and constant of ``namespace`` (a notebook's ``globals()``) that they use, in turn.

    Raises :class:`ValueError` naming what they use that cannot be written as code.
    """
    module = namespace["__name__"]
    modules, constants, definitions, cannot = set(imports), [], [], []
    seen: set[str] = set(classes)
    waiting: list[tuple[str, Any]] = list(classes.items())
    while waiting:  # each definition may use more names of the notebook: follow them all
        name, thing = waiting.pop(0)
        if isinstance(thing, type):
            members = _own_members(thing, module)
            base, base_module = _base(thing, module)
            if base_module is not None:
                modules.add(base_module)
            definitions.append(_class_source(name, base, members))
            functions = [member for member in members.values() if inspect.isfunction(member)]
        else:
            definitions.append(_without_todos(textwrap.dedent(inspect.getsource(thing))))
            functions = [thing]
        for used in dict.fromkeys(n for f in functions for n in _global_names(f.__code__)):
            if used in seen or used not in namespace:
                continue  # a builtin like len, or a name the notebook lacks too
            seen.add(used)
            value = namespace[used]
            if isinstance(value, types.ModuleType):
                modules.add(value.__name__ + ("" if value.__name__ == used else f" as {used}"))
            elif getattr(value, "__module__", None) == module:  # the learner's function or class
                waiting.append((used, value))
            elif isinstance(value, re.Pattern):  # repr is re.compile('...', flags)
                modules.add("re")
                constants.append(f"{used} = {value!r}\n")
            elif _is_literal(value):
                constants.append(f"{used} = {value!r}\n")
            else:  # a value Python cannot write back as code, such as an open file
                cannot.append(f"{used} ({type(value).__name__})")
    if cannot:
        raise ValueError(
            f"{', '.join(classes)} use(s) {', '.join(cannot)}, which cannot be written to a file: "
            "define it inside the class, or as a number, string or re.compile(...)"
        )
    head = "".join(f"import {name}\n" for name in sorted(modules))
    parts = [head, "".join(constants), *reversed(definitions)]  # helpers before their users
    return "\n\n".join(part.rstrip("\n") + "\n" for part in parts if part)
