"""Group sizes: how many units of each axis one structural group holds, i.e. what one pruning group removes.

A "step" is one pruning iteration; the size of a group is its group size. The HTTP `deltas` request and the
`deltas` methods also accept the older name `step` for the group sizes, so that clients written against it keep
working.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

from lut_server.dims import AXES
from lut_server.query_error import QueryError

DEFAULT_GROUP_SIZE: dict[str, int] = {"emb": 16, "heads": 1, "qk": 8, "v": 8, "mlp": 16}
"""Default group sizes: they keep the remaining widths multiples of 8/16."""


def group_size_argument(
    group_size: Mapping[str, int] | None, step: Mapping[str, int] | None, method: str
) -> Mapping[str, int] | None:
    """The group sizes a `deltas` call was given, under its name or under the deprecated keyword `step`."""
    if step is None:
        return group_size
    if group_size is not None:
        raise TypeError(f"{method}() got both group_size and step (its deprecated name); give group_size only")
    warnings.warn(f"{method}(step=...) is deprecated; use group_size=...", DeprecationWarning, stacklevel=3)
    return step


def check_group_size(given: Mapping[str, int] | None) -> dict[str, int]:
    """The given group sizes, each an axis and an integer >= 1; named `group_size.AXIS` whichever keyword carried
    them, so the local table and the client refuse the same input with the same field."""
    sizes = dict(given or {})
    for axis, value in sizes.items():
        if axis not in AXES:
            raise QueryError(f"group_size.{axis} is not an axis; axes are {list(AXES)}", f"group_size.{axis}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise QueryError(f"group_size.{axis} must be an integer >= 1, got {value!r}", f"group_size.{axis}")
    return sizes
