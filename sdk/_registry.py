"""Finding scorers: in a module the user names, or in installed plugin packages.

Like pluggy, a plugin is checked once when it registers, never per call. Installed
packages advertise scorers through the ``arbiter.scorers`` entry-point group; an
entry point may name a module (all its scorers load) or one scorer object.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

from pydantic import BaseModel

from ._errors import SampleError, ScorerDefinitionError
from ._execute import bind_params
from ._scorer import FunctionScorer, Scorer, validate_scorer

__all__ = ["ENTRY_POINT_GROUP", "ScorerEntry", "ScorerRegistry", "scorers_in_module"]

ENTRY_POINT_GROUP = "arbiter.scorers"


@dataclass(frozen=True)
class ScorerEntry:
    """A scorer under the name requests use, with its configured default parameters."""

    name: str
    scorer: Scorer
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            bind_params(self.scorer, self.defaults, None)
        except SampleError as exc:
            raise ScorerDefinitionError(f"scorer {self.name!r}: {exc.reason}") from exc

    def params(self, overrides: Mapping[str, Any] | None) -> BaseModel:
        """Validated parameters: request overrides merged over the defaults."""
        return bind_params(self.scorer, self.defaults, overrides)


def scorers_in_module(module: ModuleType) -> list[Scorer]:
    """The scorers a module defines: ``@scorer`` functions and ``Scorer`` subclasses."""
    found: list[Scorer] = []
    explicit = getattr(module, "__arbiter_scorers__", None)
    candidates: Iterable[Any] = explicit if explicit is not None else vars(module).values()
    for obj in candidates:
        if isinstance(obj, FunctionScorer) and (explicit is not None or obj.__module__ == module.__name__):
            found.append(obj)
        elif (
            inspect.isclass(obj)
            and issubclass(obj, Scorer)
            and obj not in (Scorer, FunctionScorer)
            and (explicit is not None or obj.__module__ == module.__name__)
            and obj.name
        ):
            found.append(validate_scorer(obj))
    return found


class ScorerRegistry:
    """Scorer types by type name."""

    def __init__(self) -> None:
        self._scorers: dict[str, Scorer] = {}
        self._origins: dict[str, str] = {}

    def add(self, candidate: Scorer | type[Scorer], *, origin: str = "") -> Scorer:
        """Register one scorer; a second, different scorer of the same name is an error."""
        instance = validate_scorer(candidate)
        existing = self._scorers.get(instance.name)
        if existing is not None:
            if type(existing) is type(instance) and getattr(existing, "fn", None) is getattr(
                instance, "fn", None
            ):
                return existing
            raise ScorerDefinitionError(
                f"two scorers are named {instance.name!r}: one from {self._origins[instance.name]},"
                f" one from {origin or 'code'}; rename one of them"
            )
        self._scorers[instance.name] = instance
        self._origins[instance.name] = origin or "code"
        return instance

    def load_module(self, module_name: str) -> list[Scorer]:
        """Import ``module_name`` and register every scorer it defines."""
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ScorerDefinitionError(
                f"cannot import plugin module {module_name!r}: {exc}. Is it on PYTHONPATH or installed?"
            ) from exc
        found = scorers_in_module(module)
        if not found:
            raise ScorerDefinitionError(
                f"plugin module {module_name!r} defines no scorers: decorate a function with"
                " @sdk.scorer(...) or subclass sdk.Scorer and set its name"
            )
        return [self.add(s, origin=f"module {module_name}") for s in found]

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> list[Scorer]:
        """Register the scorers of every installed package in the entry-point group."""
        loaded: list[Scorer] = []
        for point in entry_points(group=group):
            origin = f"entry point {point.name} = {point.value}"
            try:
                target = point.load()
            except Exception as exc:
                raise ScorerDefinitionError(f"cannot load {origin}: {exc}") from exc
            if isinstance(target, ModuleType):
                found = scorers_in_module(target)
                if not found:
                    raise ScorerDefinitionError(f"{origin} names a module that defines no scorers")
                loaded.extend(self.add(s, origin=origin) for s in found)
            else:
                loaded.append(self.add(target, origin=origin))
        return loaded

    def get(self, name: str) -> Scorer:
        """The scorer type ``name``; the error lists what is registered."""
        try:
            return self._scorers[name]
        except KeyError:
            raise ScorerDefinitionError(
                f"no scorer type {name!r}; registered: {', '.join(sorted(self._scorers)) or 'none'}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._scorers)

    def __contains__(self, name: object) -> bool:
        return name in self._scorers

    def __iter__(self) -> Any:
        return iter(self._scorers.values())
