"""The sync and async SDKs are twins: the same public classes, methods, parameters, defaults and
annotations, the async side differing only by ``async``/``await`` (``AsyncQueue`` for ``Queue``,
``AsyncIterator`` for ``Iterator``, ``__aenter__`` for ``__enter__``...).

The pairs are found from ``perfectqueue.client.__all__`` (``AsyncX`` and ``X``), so a public class
added to one side only fails here too.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import perfectqueue.client as sdk
from perfectqueue.client import _http
from perfectqueue.client._types import Leased, TaskMetadata
from perfectqueue.client.aqueue import AsyncBackend
from perfectqueue.client.queue import Backend

ASYNC_DUNDERS = {"__aenter__": "__enter__", "__aexit__": "__exit__", "__aiter__": "__iter__"}
SYNC_ON_BOTH_SIDES = {"__init__", "__repr__", "__getitem__", "__aiter__"}
"""The async side's methods that do no I/O, and so are plain functions there too."""
SYNC_KIND = {"coroutine": "function", "async generator": "generator"}


def public_pairs() -> list[tuple[str, str]]:
    names = set(sdk.__all__)
    return sorted((name.removeprefix("Async"), name) for name in names if name.startswith("Async"))


PAIRS: list[tuple[Any, Any]] = [
    *[(getattr(sdk, sync), getattr(sdk, twin)) for sync, twin in public_pairs()],
    (sdk.open, sdk.open_async),
    (Backend, AsyncBackend),
    (_http.HttpBackend, _http.AsyncHttpBackend),
]


def synced(text: str) -> str:
    """An annotation of the async side as the sync side spells it."""
    return re.sub(r"\bAsync(?=[A-Z])", "", text)


def kind(member: Any) -> str:
    if isinstance(member, property):
        return "property"
    if inspect.iscoroutinefunction(member):
        return "coroutine"
    if inspect.isasyncgenfunction(member):
        return "async generator"
    if inspect.isgeneratorfunction(member):
        return "generator"
    return "function"


def shape(function: Callable[..., Any], twin: bool) -> list[tuple[str, ...]]:
    """Each parameter's name, kind, default and annotation, and the return annotation."""
    spell = synced if twin else str
    signature = inspect.signature(function)
    found = [
        (p.name, p.kind.name, repr(p.default), spell(str(p.annotation)))
        for p in signature.parameters.values()
    ]
    return [*found, ("return", spell(str(signature.return_annotation)))]


def members(cls: type) -> Iterator[tuple[str, Any]]:
    """The methods and properties the SDK itself defines on ``cls`` and its bases, private ones
    (a leading single underscore) left out."""
    for base in cls.__mro__:
        own = base.__qualname__ + "."
        for name, member in vars(base).items():
            function = member.fget if isinstance(member, property) else member
            if not inspect.isfunction(function) or not function.__qualname__.startswith(own):
                continue  # not a method, or one that typing's Protocol put there
            if not name.startswith("_") or (name.startswith("__") and name.endswith("__")):
                yield name, member


def described(cls: type, twin: bool) -> dict[str, tuple[str, list[tuple[str, ...]]]]:
    """Each member by its sync name: its kind (as the sync side's) and its shape."""
    found: dict[str, tuple[str, list[tuple[str, ...]]]] = {}
    for name, member in members(cls):
        function = member.fget if isinstance(member, property) else member
        sync_name = ASYNC_DUNDERS.get(name, name) if twin else name
        found.setdefault(sync_name, (SYNC_KIND.get(kind(member), kind(member)), shape(function, twin)))
    return found


def pair_id(pair: tuple[Any, Any]) -> str:
    return f"{pair[0].__name__}-{pair[1].__name__}"


@pytest.mark.parametrize("pair", PAIRS, ids=pair_id)
def test_the_async_twin_has_the_same_members_and_signatures(pair: tuple[Any, Any]) -> None:
    sync, twin = pair
    if inspect.isfunction(sync):
        assert shape(twin, twin=True) == shape(sync, twin=False)
        return
    sync_members, twin_members = described(sync, twin=False), described(twin, twin=True)
    assert sorted(twin_members) == sorted(sync_members), "a member on one side only"
    for name, expected in sync_members.items():
        assert twin_members[name] == expected, name


@pytest.mark.parametrize("pair", [p for p in PAIRS if inspect.isclass(p[1])], ids=pair_id)
def test_the_async_twin_awaits_every_call_that_may_do_io(pair: tuple[Any, Any]) -> None:
    plain = {name for name, member in members(pair[1]) if kind(member) == "function"}
    assert plain <= SYNC_ON_BOTH_SIDES


def test_the_public_classes_come_in_pairs() -> None:
    assert public_pairs() == [
        ("AcquiredTask", "AsyncAcquiredTask"),
        ("Queue", "AsyncQueue"),
        ("Task", "AsyncTask"),
    ]
    classes = {name for name in sdk.__all__ if inspect.isclass(getattr(sdk, name))}
    for name in classes:
        module = getattr(sdk, name).__module__
        if module.endswith(".queue"):
            assert f"Async{name}" in classes, f"{name} has no async twin"
        elif module.endswith(".aqueue"):
            assert name.removeprefix("Async") in classes, f"{name} has no sync twin"


def test_the_twins_set_the_same_attributes() -> None:
    leased = Leased(TaskMetadata("k", "t", {"a": 1}, "running"), "1")
    queue, twin_queue = sdk.Queue(None), sdk.AsyncQueue(None)  # type: ignore[arg-type]
    made = [
        (queue, twin_queue),
        (sdk.Task(queue, "k"), sdk.AsyncTask(twin_queue, "k")),
        (sdk.AcquiredTask(queue, leased), sdk.AsyncAcquiredTask(twin_queue, leased)),
    ]
    for sync, twin in made:
        assert sorted(vars(twin)) == sorted(vars(sync)), type(sync).__name__
