"""Op families, one module each (see registry.py). Importing this package registers them; the import
order is pattern priority: attention first, as it contains matmuls and a softmax; the rotary embedding and
SwiGLU before the residual add, whose pattern is any add; the quantize, which the families before it fold
into their kernels, last."""

from ..registry import PREFIX, Family, families, family_of

# isort: off
from . import attention, gemm, softmax  # noqa: F401 - registration
from . import rope, swiglu, rms_norm, residual_add, quantize  # noqa: F401 - registration
# isort: on

__all__ = ["PREFIX", "Family", "families", "family_of"]
