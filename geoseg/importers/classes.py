"""Class mapping at import: which source classes become which geoseg class, and which are dropped.

A mapping is a list of rules ``SOURCE[,SOURCE...]=TARGET`` (``->`` works as well as ``=``), e.g.
``Small_Vehicle,Large_Vehicle=vehicle``, or a dict in Python (``{"Small_Vehicle": "vehicle"}``,
or ``{"vehicle": ["Small_Vehicle", "Large_Vehicle"]}``). The rules:

* **No rule and no keep list**: every class is imported under its own name.
* **Otherwise**: a mapped class becomes its target, a class named in ``keep`` is imported under
  its own name, and every other class is **dropped** (the importers count the dropped objects
  per source class and report them). ``keep_all`` keeps every unmapped class instead.
* Source names compare case-insensitively, with ``-``, ``_`` and spaces alike
  (``small-vehicle`` matches ``Small_Vehicle``); targets are used as written.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from geoseg.errors import ConfigError

__all__ = ["ClassMapping", "normalise_name", "output_classes"]

_SEP = re.compile(r"[\s_\-]+")


def normalise_name(name: str) -> str:
    """The form class names are compared in: case-folded, runs of ``-``/``_``/space as ``_``.

    Example:
        >>> normalise_name("Small-Vehicle") == normalise_name("small_vehicle")
        True
    """
    return _SEP.sub("_", str(name).strip()).casefold()


@dataclass(frozen=True)
class ClassMapping:
    """Source class name -> geoseg class name, or dropped (see the module docstring).

    Attributes:
        rules: ``(source, target)`` pairs in the order given (targets keep this order in the
            output class list).
        keep: source classes imported under their own name besides the mapped ones.
        keep_all: import every class that no rule maps under its own name.
    """

    rules: tuple[tuple[str, str], ...] = ()
    keep: tuple[str, ...] = ()
    keep_all: bool = False
    _lookup: dict[str, str] = field(init=False, repr=False, compare=False)
    _keep: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lookup: dict[str, str] = {}
        for source, target in self.rules:
            if not str(source).strip() or not str(target).strip():
                raise ConfigError(f"class mapping: empty class name in {source!r} -> {target!r}")
            key = normalise_name(source)
            if key in lookup and lookup[key] != target:
                raise ConfigError(
                    f"class mapping: {source!r} is mapped to both {lookup[key]!r} and {target!r}"
                )
            lookup[key] = str(target).strip()
        object.__setattr__(self, "_lookup", lookup)
        object.__setattr__(self, "_keep", frozenset(normalise_name(k) for k in self.keep))

    @classmethod
    def parse(
        cls, specs: Iterable[str] = (), *, keep: Iterable[str] = (), keep_all: bool = False
    ) -> ClassMapping:
        """Build a mapping from rule strings such as ``"Small_Vehicle,Large_Vehicle=vehicle"``.

        Raises:
            ConfigError: a rule without ``=``/``->``, or with an empty name.

        Example:
            >>> m = ClassMapping.parse(["Small_Vehicle,Large_Vehicle=vehicle"])
            >>> m.target("small-vehicle"), m.target("plane")
            ('vehicle', None)
        """
        rules: list[tuple[str, str]] = []
        for spec in specs:
            text = str(spec).strip()
            if "->" in text:
                left, _, right = text.partition("->")
            elif "=" in text:
                left, _, right = text.rpartition("=")
            else:
                raise ConfigError(
                    f"class mapping {text!r}: write SOURCE[,SOURCE...]=TARGET, e.g. "
                    "'Small_Vehicle,Large_Vehicle=vehicle'"
                )
            sources = [s.strip() for s in left.split(",") if s.strip()]
            target = right.strip()
            if not sources or not target:
                raise ConfigError(f"class mapping {text!r}: a source and a target class are needed")
            rules.extend((s, target) for s in sources)
        return cls(tuple(rules), tuple(str(k).strip() for k in keep), keep_all)

    @classmethod
    def from_dict(
        cls,
        mapping: Mapping[str, str | Sequence[str]],
        *,
        keep: Iterable[str] = (),
        keep_all: bool = False,
    ) -> ClassMapping:
        """Build a mapping from ``{source: target}`` or ``{target: [source, ...]}`` entries."""
        rules: list[tuple[str, str]] = []
        for key, value in mapping.items():
            if isinstance(value, str):
                rules.append((str(key), value))
            else:
                rules.extend((str(s), str(key)) for s in value)
        return cls(tuple(rules), tuple(str(k).strip() for k in keep), keep_all)

    @classmethod
    def coerce(
        cls, value: Any, *, keep: Iterable[str] = (), keep_all: bool = False
    ) -> ClassMapping:
        """A :class:`ClassMapping` from one, a dict, a rule string or a list of rule strings.

        ``None`` gives the identity mapping (every class under its own name, or only ``keep``).
        """
        keep = tuple(keep)
        if isinstance(value, ClassMapping):
            if keep or keep_all:
                return cls(value.rules, value.keep + keep, value.keep_all or keep_all)
            return value
        if value is None:
            return cls((), keep, keep_all)
        if isinstance(value, Mapping):
            return cls.from_dict(value, keep=keep, keep_all=keep_all)
        if isinstance(value, str):
            return cls.parse([value], keep=keep, keep_all=keep_all)
        return cls.parse(list(value), keep=keep, keep_all=keep_all)

    @property
    def is_identity(self) -> bool:
        """Whether every class is imported under its own name."""
        return not self.rules and (self.keep_all or not self.keep)

    def target(self, name: str) -> str | None:
        """The geoseg class of source class ``name``, or ``None`` when it is dropped."""
        key = normalise_name(name)
        if key in self._lookup:
            return self._lookup[key]
        if self.keep_all or (not self.rules and not self.keep) or key in self._keep:
            return str(name)
        return None

    def targets(self) -> list[str]:
        """The rules' targets, in order of first appearance."""
        return list(dict.fromkeys(t for _, t in self.rules))

    def to_dict(self) -> dict[str, Any]:
        """JSON form, recorded in the imported folder's ``"geoseg"`` block."""
        grouped: dict[str, list[str]] = {}
        for source, target in self.rules:
            grouped.setdefault(target, []).append(source)
        return {"map": grouped, "keep": list(self.keep), "keep_all": self.keep_all}


def output_classes(
    mapping: ClassMapping,
    source_order: Sequence[str],
    present: Mapping[str, int],
    classes: Sequence[str] | None = None,
) -> tuple[str, ...]:
    """The imported folder's class order (COCO category id = index + 1).

    ``classes`` when given (objects of other classes are dropped); otherwise the rules' targets
    in rule order, then kept source classes in the source's own order (COCO category ids, YOLO
    names, sorted names for DOTA and vector files), each only when it has an object.

    Args:
        mapping: the class mapping.
        source_order: the source's class names in its own order.
        present: geoseg class name -> objects of it after mapping.
        classes: an explicit class order.
    """
    if classes is not None:
        out = tuple(str(c) for c in classes)
        if len(set(out)) != len(out) or not out:
            raise ConfigError(f"classes must be distinct, non-empty names, got {list(out)}")
        return out
    order: list[str] = []
    for name in [*mapping.targets(), *(mapping.target(s) for s in source_order), *sorted(present)]:
        if name is not None and present.get(name, 0) > 0 and name not in order:
            order.append(name)
    return tuple(order)
