"""Group sizes: how many units of each axis one structural group holds, i.e. what one pruning group removes.

A "step" is one pruning iteration; the size of a group is its group size. The HTTP `deltas` request and the
`deltas` methods also accept the older name `step` for the group sizes, so that clients written against it keep
working.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

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
