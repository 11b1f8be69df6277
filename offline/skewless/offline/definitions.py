"""Deprecated home of the definitions API; import from `skewless.registry` instead.

Kept for one release so that repositories written against 0.1 keep loading.
"""

import warnings

from skewless.registry.definitions import *  # noqa: F403
from skewless.registry.definitions import __all__ as __all__

warnings.warn(
    "skewless.offline.definitions moved: import from skewless.registry instead",
    DeprecationWarning,
    stacklevel=2,
)
