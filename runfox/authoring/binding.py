"""Filling a step function's parameters from a job's inputs, and shaping its return.

A ``Binding`` is made once, when a function is registered: it reads the
signature (and the resolved type hints, where they resolve) and then, for every
call, checks the inputs against it *before* the call:

- every input fills the parameter of the same name; an input that names no
  parameter is an error unless the function takes ``**kwargs``;
- a required parameter (no default) with no input of its name is an error;
- a parameter annotated with a Pydantic model class receives
  ``Model.model_validate(value)``; a validation error names the step, the
  parameter and the field. Pydantic is never imported here: a class is treated
  as a model only if it has ``model_validate`` and ``pydantic`` is already
  imported (it must be, for the annotation to exist).

The errors are ``BindingError``, so the harness records the failed attempt with
``error_type: "BindingError"``. ``shape_output`` turns the return value into the
executor's output dict: a dict is kept, a Pydantic model becomes its JSON dump,
anything else becomes ``{"result": value}``.
"""

from __future__ import annotations

import inspect
import sys
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import RunfoxError

__all__ = ["Binding", "BindingError", "RegistryError", "shape_output"]


class RegistryError(RunfoxError, ValueError):
    """A registry cannot register or find a step (names the function and module)."""


class BindingError(RunfoxError, TypeError):
    """A step's inputs do not fit its function's parameters (checked before the call)."""


def _is_model(annotation: Any) -> bool:
    """Whether ``annotation`` is a Pydantic model class (without importing pydantic)."""
    pydantic = sys.modules.get("pydantic")
    if pydantic is None or not isinstance(annotation, type):
        return False
    base = getattr(pydantic, "BaseModel", None)
    return base is not None and issubclass(annotation, base)


def _hints(target: Callable[..., Any]) -> dict[str, Any]:
    """Resolved annotations; unresolvable ones (forward references) are left out.

    Names are looked up in the function's module and in the variables it closes
    over, so a model class defined in an enclosing function (as in a test) counts.
    """
    try:
        local = dict(inspect.getclosurevars(target).nonlocals)
    except (TypeError, ValueError):
        local = {}
    try:
        return typing.get_type_hints(target, localns=local)
    except Exception:  # one name is not resolvable: resolve the others one by one
        pass
    hints: dict[str, Any] = {}
    space = {**getattr(target, "__globals__", {}), **local}
    for name, annotation in getattr(target, "__annotations__", {}).items():
        if not isinstance(annotation, str):
            hints[name] = annotation
            continue
        try:
            hints[name] = eval(annotation, space)  # an annotation is an expression
        except Exception:
            continue  # not resolvable: no model validation for this parameter
    return hints


@dataclass(frozen=True)
class _Param:
    name: str
    kind: inspect._ParameterKind
    required: bool
    model: Any = None  # a Pydantic model class, or None


class Binding:
    """How one step function takes its inputs.

    Args:
        target: the function that is called (for a class, its ``run``).
        where: how errors name the step, e.g. ``"step 'add' (mypkg.steps.add)"``.
        skip_self: ``target`` is a class's plain ``run`` function: its first
            parameter is the instance, not an input.
    """

    def __init__(self, target: Callable[..., Any], where: str, skip_self: bool = False
                 ) -> None:
        self.where = where
        signature = list(inspect.signature(target).parameters.values())
        hints = _hints(target)
        self.var_keyword = False
        params: list[_Param] = []
        for p in signature[1:] if skip_self else signature:
            if p.kind is p.VAR_KEYWORD:
                self.var_keyword = True
                continue
            if p.kind is p.VAR_POSITIONAL:
                continue  # inputs are named; *args stays empty
            model = hints.get(p.name)
            params.append(_Param(p.name, p.kind, p.default is p.empty,
                                 model if _is_model(model) else None))
        self.params = tuple(params)
        self._names = frozenset(p.name for p in params)

    @property
    def parameters(self) -> list[dict[str, Any]]:
        """The parameters as ``{"name", "required", "model"?}`` (for ``describe``)."""
        return [{"name": p.name, "required": p.required,
                 **({"model": p.model.__name__} if p.model is not None else {})}
                for p in self.params]

    def bind(self, inputs: Mapping[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """The positional and keyword arguments for ``inputs``.

        Raises:
            BindingError: an unknown input, a missing required parameter, or a
                value a Pydantic annotation rejects; the message names the step
                and the parameter (and the field, for Pydantic).
        """
        if not isinstance(inputs, Mapping):
            raise BindingError(f"{self.where}: inputs must be an object, got "
                               f"{type(inputs).__name__}")
        if not self.var_keyword:
            unknown = sorted(k for k in inputs if k not in self._names)
            if unknown:
                known = ", ".join(repr(n) for n in sorted(self._names)) or "none"
                more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
                raise BindingError(f"{self.where}: unknown input {unknown[0]!r}{more}; "
                                   f"the function takes {known}")
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for p in self.params:
            if p.name not in inputs:
                if p.required:
                    raise BindingError(f"{self.where}: missing required input {p.name!r}")
                if p.kind is inspect.Parameter.POSITIONAL_ONLY:
                    break  # later positional-only ones take their defaults too
                continue
            value = self._convert(p, inputs[p.name])
            if p.kind is inspect.Parameter.POSITIONAL_ONLY:
                args.append(value)
            else:
                kwargs[p.name] = value
        for key, value in inputs.items():
            if key not in self._names:
                kwargs[key] = value  # **kwargs takes the rest
        return args, kwargs

    def _convert(self, p: _Param, value: Any) -> Any:
        if p.model is None or isinstance(value, p.model):
            return value
        try:
            return p.model.model_validate(value)
        except Exception as exc:  # pydantic.ValidationError, without importing it
            raise BindingError(f"{self.where}: input {p.name!r} is not a valid "
                               f"{p.model.__name__}: {_validation_text(exc)}") from exc


def _validation_text(exc: Exception) -> str:
    """``field.sub: message; ...`` from a Pydantic ``ValidationError``, else ``str(exc)``."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    try:
        found = errors()
    except Exception:
        return str(exc)
    parts = []
    for error in found[:5]:
        loc = ".".join(str(x) for x in error.get("loc", ())) or "(value)"
        parts.append(f"field {loc!r}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or str(exc)


def shape_output(value: Any) -> Any:
    """The executor output for a step's return value (see the module docstring).

    A dict is returned as it is (the harness checks it is JSON); a Pydantic model
    becomes ``model_dump(mode="json")``; anything else ``{"result": value}``.
    """
    if isinstance(value, dict):
        return value
    if _is_model(type(value)):
        return value.model_dump(mode="json")
    return {"result": value}
