"""Two stand-ins that let Brain-Score's code import in a CPU-only image; neither changes a number it computes.

* ``cv2``: ``brainscore_vision.model_helpers.activations.core`` imports OpenCV at the top, but uses it only to shift
  images for microsaccades (``require_variance``), which a cortexbox model is never asked for. When OpenCV is not
  installed (the importer adds ``opencv-python-headless`` only for a plugin that imports ``cv2`` itself), a module
  that fails on first use stands in, so the image need not carry OpenCV's ~100 MB.
* torchvision's compiled ops: PyPI's torchvision is built against PyPI's CUDA torch, so with the CPU torch its
  ``_C`` library (nms, roi_align, deform_conv2d: detection ops) does not load, and ``import torchvision`` then fails
  registering a fake kernel for ``torchvision::nms``. Declaring the two op schemas it registers unconditionally
  lets it import; the models, transforms and everything a classification network runs are pure Python on torch.
  Calling one of those ops still fails ("no kernel"), loudly.

The reference side of the parity check (``perf/brainscore_reference.py``, run by Brain-Score's own Python) installs the
same stand-ins from this file, so both sides run the same code.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path


class _Missing(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise RuntimeError(
            f"cv2.{name}: OpenCV is not installed in this image (Brain-Score uses it only for microsaccades); "
            "a plugin that needs it imports cv2 itself, and `cortexbox import brainscore` then installs it"
        )


def install_cv2_stub() -> bool:
    """Puts the stand-in at ``sys.modules['cv2']`` when OpenCV is not installed; True if it did."""
    if "cv2" in sys.modules or importlib.util.find_spec("cv2") is not None:
        return False
    sys.modules["cv2"] = _Missing("cv2")
    return True


def declare_torchvision_ops() -> bool:
    """Declares ``torchvision::nms`` and ``torchvision::qnms`` when torchvision is installed but its ``_C`` cannot be
    loaded with this torch; True if it did. Call before anything imports torchvision."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None or "torchvision" in sys.modules:
        return False
    import torch

    for library in sorted(Path(spec.origin).parent.glob("_C*.so")):
        try:
            torch.ops.load_library(str(library))
            return False  # the real ops are there
        except (OSError, RuntimeError):
            break
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _KEEP.append(lib)  # a Library deregisters its definitions when it is collected
    return True


_KEEP: list = []
