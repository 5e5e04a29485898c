"""``with thing:`` for the objects that hold something open until their ``close()``."""

from __future__ import annotations

from typing import Self


class Closing:
    """A context manager that returns itself and calls ``close()`` on the way out."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
