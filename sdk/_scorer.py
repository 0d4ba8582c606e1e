"""The scorer API: one small typed object from a sample to a result.

Two ways to write one, both checked once, when they are defined or loaded:

* a class with ``name``, ``Params`` (a pydantic model) and a ``score`` method;
* a function under the ``@scorer(...)`` decorator.

``score`` may be sync or async and returns a float, a bool or a ``ScoreResult``.
A scorer that needs other scorers (a composite) declares a ``ctx`` parameter and
receives a ``ScoringContext``; such scorers must be async and not CPU-bound,
because the context lives on the server's event loop.

``cpu_bound=True`` tells the server to run the scorer in worker processes with a
hard per-call timeout, instead of on the event loop.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol, TypeVar, Union, runtime_checkable

from pydantic import BaseModel, ConfigDict

from ._errors import ScorerDefinitionError
from ._types import Sample, ScoreResult

__all__ = [
    "NoParams",
    "ScoreOutput",
    "Scorer",
    "ScoringContext",
    "scorer",
    "validate_scorer",
]

ScoreOutput = Union[float, int, bool, ScoreResult]
"""What a ``score`` method may return."""

_NAME = re.compile(r"^[a-z][a-z0-9_.\-]{0,63}$")


class NoParams(BaseModel):
    """Parameters of a scorer that takes none."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@runtime_checkable
class ScoringContext(Protocol):
    """What a scorer with a ``ctx`` parameter may call: other loaded scorers."""

    async def score(
        self, scorer: str, sample: Sample, params: Mapping[str, Any] | None = None
    ) -> ScoreResult:
        """Score ``sample`` with the scorer loaded under the name ``scorer``."""
        ...


class Scorer:
    """Base class of class-based scorers.

    Subclasses set ``name`` (the type name configs and requests use), optionally
    ``description`` (defaults to the docstring), ``Params`` and ``cpu_bound``, and
    define ``score(self, sample, params)`` (sync or async; add ``ctx`` to receive a
    ``ScoringContext``). Instances are created with no arguments.

    Optional lifecycle hooks, for scorers that hold resources (a model): the server
    calls ``setup(self, params)`` once per configured name at start-up, in a thread,
    with that name's default params, and ``close(self)`` once at shutdown.

    ``score`` is deliberately not declared here: its parameter types are the
    subclass's own (its ``Params`` model, an optional ``ctx``), which a base-class
    signature could not express; ``validate_scorer`` checks it instead.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = NoParams
    cpu_bound: ClassVar[bool] = False
    serve_by_default: ClassVar[bool] = True
    """False for types that only work once configured (a reward model needs its
    model path): the server then serves them only under names from the config."""

    # Filled in by validate_scorer; derived from the score method's signature.
    is_async: bool = False
    wants_context: bool = False

    def __repr__(self) -> str:
        return f"<scorer {self.name!r} ({type(self).__name__})>"


class FunctionScorer(Scorer):
    """A scorer made by ``@scorer`` from a plain function."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str,
        params: type[BaseModel],
        description: str,
        cpu_bound: bool,
    ) -> None:
        self.fn = fn
        self.name = name  # type: ignore[misc]  # instance attribute shadows the ClassVar
        self.Params = params  # type: ignore[misc]
        self.description = description  # type: ignore[misc]
        self.cpu_bound = cpu_bound  # type: ignore[misc]
        self.__doc__ = fn.__doc__
        self.__module__ = fn.__module__
        self.__qualname__ = fn.__qualname__
        self.__wrapped__ = fn

    def score(self, sample: Sample, params: Any, **kwargs: Any) -> Any:
        return self.fn(sample, params, **kwargs)

    def __reduce__(self) -> tuple[Any, ...]:
        # The module attribute is this object, not the function, so pickle it by
        # reference: worker processes import the module and find the same scorer.
        return (_import_attribute, (self.__module__, self.__qualname__))


def _import_attribute(module: str, qualname: str) -> Any:
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


F = TypeVar("F", bound=Callable[..., Any])


def scorer(
    name: str,
    *,
    params: type[BaseModel] = NoParams,
    description: str | None = None,
    cpu_bound: bool = False,
) -> Callable[[Callable[..., Any]], Scorer]:
    """Turn ``fn(sample, params)`` (or ``async def``, optionally with ``ctx``) into a scorer.

    Example::

        class Params(BaseModel):
            ignore_case: bool = True

        @scorer("exact", params=Params)
        def exact(sample: Sample, params: Params) -> float:
            a, b = sample.completion_text.strip(), sample.reference or ""
            return float(a.lower() == b.lower() if params.ignore_case else a == b)
    """

    def wrap(fn: Callable[..., Any]) -> Scorer:
        if not callable(fn):
            raise ScorerDefinitionError(f"@scorer({name!r}) must decorate a function")
        made = FunctionScorer(
            fn,
            name=name,
            params=params,
            description=description if description is not None else inspect.getdoc(fn) or "",
            cpu_bound=cpu_bound,
        )
        return validate_scorer(made)

    return wrap


def validate_scorer(candidate: Scorer | type[Scorer]) -> Scorer:
    """Check a scorer once and return a ready instance; the error says how to fix it."""
    if isinstance(candidate, type):
        if not issubclass(candidate, Scorer):
            raise ScorerDefinitionError(f"{candidate.__qualname__} must subclass sdk.Scorer")
        try:
            instance = candidate()
        except TypeError as exc:
            raise ScorerDefinitionError(
                f"scorer class {candidate.__qualname__} must be constructible with no arguments"
                f" (put settings in its Params model): {exc}"
            ) from exc
    elif isinstance(candidate, Scorer):
        instance = candidate
    else:
        raise ScorerDefinitionError(
            f"{candidate!r} is not a scorer: subclass sdk.Scorer or use the @scorer decorator"
        )
    label = type(instance).__qualname__ if not isinstance(instance, FunctionScorer) else instance.__qualname__
    if not isinstance(instance.name, str) or not _NAME.match(instance.name):
        raise ScorerDefinitionError(
            f"scorer {label} has name {instance.name!r}: use 1-64 characters of lower-case"
            " letters, digits, '_', '.', '-', starting with a letter"
        )
    if not (isinstance(instance.Params, type) and issubclass(instance.Params, BaseModel)):
        raise ScorerDefinitionError(f"scorer {instance.name!r}: Params must be a pydantic BaseModel subclass")
    method = instance.fn if isinstance(instance, FunctionScorer) else instance.score  # type: ignore[attr-defined]
    if not callable(getattr(instance, "score", None)):
        raise ScorerDefinitionError(f"scorer {instance.name!r} must define score(self, sample, params)")
    try:
        signature = inspect.signature(method)
    except (TypeError, ValueError) as exc:
        raise ScorerDefinitionError(f"scorer {instance.name!r}: cannot read its signature") from exc
    positional = [
        p
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "ctx"
    ]
    if len(positional) != 2:
        raise ScorerDefinitionError(
            f"scorer {instance.name!r} must take (sample, params) and optionally ctx;"
            f" its signature is {signature}"
        )
    instance.wants_context = "ctx" in signature.parameters
    instance.is_async = inspect.iscoroutinefunction(method)
    if instance.wants_context and (instance.cpu_bound or not instance.is_async):
        raise ScorerDefinitionError(
            f"scorer {instance.name!r} takes ctx, so it must be 'async def' and not cpu_bound:"
            " other scorers are reached through the server's event loop"
        )
    if instance.cpu_bound and instance.is_async:
        raise ScorerDefinitionError(
            f"scorer {instance.name!r} is cpu_bound, so it must be a plain 'def': it runs in a worker process"
        )
    if not instance.description:
        own_doc = type(instance).__doc__  # not getdoc: that would inherit the base class's text
        instance.description = inspect.cleandoc(own_doc or "").split("\n\n")[0]  # type: ignore[misc]
    return instance
