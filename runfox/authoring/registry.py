"""``Registry``: step functions registered by name, and itself an executor.

    registry = runfox.Registry()

    @registry.step
    def add(x: int, y: int) -> int:           # returns {"result": x + y}
        return x + y

    @registry.step(name="fetch", version=2, cache=True)
    async def fetch_user(user_id: int) -> dict:
        ...

    @registry.step
    class Scale:                               # configuration as class attributes
        factor = 3
        def run(self, value: int) -> dict:
            return {"value": value * self.factor}

    backend = runfox.Backend(executor=registry)   # or --executor mypkg.steps:registry

``registry(fn, inputs)`` is the executor contract: it finds the step registered
as ``fn``, fills its parameters from ``inputs`` by name (``binding.Binding``:
unknown or missing inputs fail the attempt before the call, as ``BindingError``),
calls it (a class is instantiated for every call, with no arguments, and its
``run`` called) and shapes the return value (a non-dict becomes
``{"result": value}``). An async step called this way runs on its own event
loop; the harnesses ask ``is_async(fn)`` first and ``await acall(fn, inputs)``
on their loop instead (``runfox.execution``). The decorator returns what it was
given, so a step stays an ordinary function or class for unit tests.
"""

from __future__ import annotations

import asyncio
import difflib
import inspect
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from .aio import run_coroutine
from .binding import Binding, RegistryError, shape_output

__all__ = ["Registry", "StepEntry", "UnknownFunction"]

T = TypeVar("T")


class UnknownFunction(RegistryError, LookupError):
    """A job's ``fn`` is not registered (the message lists the names that are)."""


def _origin(target: Any) -> str:
    """``module.qualname`` of a function or class, for error messages."""
    module = getattr(target, "__module__", None) or "?"
    return f"{module}.{getattr(target, '__qualname__', repr(target))}"


@dataclass(frozen=True)
class StepEntry:
    """One registered step.

    Attributes:
        name: the ``fn`` a spec uses to call it.
        target: the function or class as registered.
        kind: ``"function"``, ``"async"`` (an ``async def``), ``"class"`` or
            ``"async class"`` (a class whose ``run`` is ``async def``).
        version: the step's version, for the step cache (``None`` if not given).
        cache: the step's cache setting as given (``None`` if not given).
        binding: how inputs fill its parameters.
    """

    name: str
    target: Any
    kind: str
    version: Any
    cache: Any
    binding: Binding

    @property
    def is_async(self) -> bool:
        return self.kind in ("async", "async class")

    @property
    def origin(self) -> str:
        return _origin(self.target)

    def _callable(self) -> Callable[..., Any]:
        if self.kind in ("class", "async class"):
            method: Callable[..., Any] = self.target().run
            return method
        function: Callable[..., Any] = self.target
        return function

    def call(self, inputs: Mapping[str, Any]) -> Any:
        """Bind, call and shape, synchronously (an async step runs on a new loop)."""
        args, kwargs = self.binding.bind(inputs)
        if self.is_async:
            return shape_output(run_coroutine(self._callable()(*args, **kwargs)))
        return shape_output(self._callable()(*args, **kwargs))

    async def acall(self, inputs: Mapping[str, Any]) -> Any:
        """Bind, call and shape on the running loop (a sync step goes to a thread)."""
        args, kwargs = self.binding.bind(inputs)
        if self.is_async:
            return shape_output(await self._callable()(*args, **kwargs))
        return shape_output(await asyncio.to_thread(self._callable(), *args, **kwargs))


class Registry:
    """Named step functions; an executor (``registry(fn, inputs) -> dict``).

    Args:
        name: how errors name the registry; by default the module that made it.
    """

    def __init__(self, name: str | None = None) -> None:
        if name is None:
            frame = sys._getframe(1)
            name = str(frame.f_globals.get("__name__", "?"))
        self.name = name
        self._entries: dict[str, StepEntry] = {}

    # -- registering ----------------------------------------------------------------

    @overload
    def step(self, target: T) -> T: ...

    @overload
    def step(self, *, name: str | None = None, version: Any = None, cache: Any = None
             ) -> Callable[[T], T]: ...

    def step(self, target: Any = None, *, name: str | None = None, version: Any = None,
             cache: Any = None) -> Any:
        """Register a function, ``async def`` function or class with ``run``.

        Bare (``@registry.step``) or with options (``@registry.step(name=...,
        version=..., cache=...)``). ``name`` defaults to the function's or class's
        ``__name__``; a class may set ``name``, ``version`` and ``cache`` as
        class attributes instead (the decorator's arguments win). ``version``
        and ``cache`` are kept for the step cache (``describe``). Returns the
        target unchanged.

        Raises:
            RegistryError: the target is not a function or a class with ``run``,
                a class cannot be instantiated without arguments, or the name is
                taken by another step (both are named).
        """
        def register(obj: T) -> T:
            self.add(obj, name=name, version=version, cache=cache)
            return obj

        return register if target is None else register(target)

    def add(self, target: Any, *, name: str | None = None, version: Any = None,
            cache: Any = None) -> StepEntry:
        """Register ``target`` (what ``step`` does, without the decorator); return its entry."""
        if inspect.isclass(target):
            entry = self._class_entry(target, name, version, cache)
        elif inspect.isfunction(target) or inspect.ismethod(target) or \
                inspect.isbuiltin(target):
            entry = self._function_entry(target, name, version, cache)
        else:
            raise RegistryError(f"registry {self.name!r}: cannot register {target!r} "
                                f"({type(target).__name__}): a step is a function, an "
                                "async function, or a class with a run method")
        existing = self._entries.get(entry.name)
        if existing is not None and _origin(existing.target) != _origin(target):
            raise RegistryError(f"registry {self.name!r}: fn {entry.name!r} is registered "
                                f"twice: {existing.origin} and {_origin(target)}")
        self._entries[entry.name] = entry  # the same object again (a reload) replaces it
        return entry

    def _function_entry(self, target: Callable[..., Any], name: str | None, version: Any,
                        cache: Any) -> StepEntry:
        name = name or getattr(target, "__name__", None)
        if not name or name == "<lambda>":
            raise RegistryError(f"registry {self.name!r}: {_origin(target)} needs a name: "
                                "use @registry.step(name=...)")
        kind = "async" if inspect.iscoroutinefunction(target) else "function"
        binding = Binding(target, f"step {name!r} ({_origin(target)})")
        return StepEntry(name, target, kind, version, cache, binding)

    def _class_entry(self, cls: type, name: str | None, version: Any, cache: Any
                     ) -> StepEntry:
        where = _origin(cls)
        run = getattr(cls, "run", None)
        if run is None or not callable(run):
            raise RegistryError(f"registry {self.name!r}: class {where} has no run method")
        try:
            inspect.signature(cls).bind()
        except TypeError as exc:
            raise RegistryError(f"registry {self.name!r}: class {where} must be constructible "
                                f"without arguments (configure it with class attributes): "
                                f"{exc}") from None
        except ValueError:
            pass  # no signature to read (a builtin base); found out at the first call
        name = name or getattr(cls, "name", None) or cls.__name__
        if not isinstance(name, str):
            raise RegistryError(f"registry {self.name!r}: class {where}: name must be a "
                                f"string, got {type(name).__name__}")
        version = version if version is not None else getattr(cls, "version", None)
        cache = cache if cache is not None else getattr(cls, "cache", None)
        kind = "async class" if inspect.iscoroutinefunction(run) else "class"
        static = isinstance(inspect.getattr_static(cls, "run"), staticmethod | classmethod)
        binding = Binding(run, f"step {name!r} ({where}.run)", skip_self=not static)
        return StepEntry(name, cls, kind, version, cache, binding)

    # -- looking up -------------------------------------------------------------------

    def get(self, fn: str) -> StepEntry:
        """The entry registered as ``fn``.

        Raises:
            UnknownFunction: ``fn`` is not registered; the message names the
                registry, lists the registered names and suggests close ones.
        """
        entry = self._entries.get(fn)
        if entry is not None:
            return entry
        known = sorted(self._entries)
        close = difflib.get_close_matches(str(fn), known, n=3)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        listed = ", ".join(known[:20]) + (" ..." if len(known) > 20 else "") or "none"
        raise UnknownFunction(f"fn {fn!r} is not registered in registry {self.name!r} "
                              f"(registered: {listed}){hint}")

    def __contains__(self, fn: object) -> bool:
        return fn in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def is_async(self, fn: str) -> bool:
        """Whether ``fn`` is an async step (``False`` for an unknown ``fn``: the sync
        path reports it)."""
        entry = self._entries.get(fn)
        return entry is not None and entry.is_async

    def describe(self, fn: str) -> dict[str, Any]:
        """What is registered as ``fn``: name, origin, kind, version, cache, parameters."""
        entry = self.get(fn)
        return {"name": entry.name, "origin": entry.origin, "kind": entry.kind,
                "version": entry.version, "cache": entry.cache,
                "parameters": entry.binding.parameters}

    # -- the executor -------------------------------------------------------------------

    def __call__(self, fn: str, inputs: dict[str, Any]) -> Any:
        """Run step ``fn`` with ``inputs``; return its output dict (see the module docstring).

        Raises (and the harness records as a failed attempt): ``UnknownFunction``,
        ``BindingError``, or whatever the step raises.
        """
        return self.get(fn).call(inputs)

    async def acall(self, fn: str, inputs: dict[str, Any]) -> Any:
        """``__call__`` on the running event loop: async steps are awaited, sync ones
        run in a thread."""
        return await self.get(fn).acall(inputs)

    def __repr__(self) -> str:
        return f"Registry({self.name!r}, {len(self._entries)} steps)"

