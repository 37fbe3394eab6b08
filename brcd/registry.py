"""Name -> factory registries (the timm ``create_model`` / torchdistill pattern).

Every pluggable piece of the benchmark (datasets, split protocols, backbones,
hashing objectives, distillation losses, ...) is looked up by name in a
:class:`Registry`, so that configs can name them and no code branches on names.
"""
from __future__ import annotations

from typing import Callable, Dict, Generic, Iterator, TypeVar

from brcd.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of factories with helpful errors for unknown names."""

    def __init__(self, kind: str, config_key: str | None = None):
        self.kind = kind
        self.config_key = config_key or kind
        self._entries: Dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r} (config key `{self.config_key}`); "
                f"allowed values: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
