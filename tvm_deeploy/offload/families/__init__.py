"""Op families, one module each (see registry.py). Importing this package registers them; the import
order is pattern priority: attention first, as it contains matmuls and a softmax."""

from ..registry import PREFIX, Family, families, family_of
from . import attention, gemm, softmax  # noqa: F401 - registration

__all__ = ["PREFIX", "Family", "families", "family_of"]
