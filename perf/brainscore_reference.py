"""Brain-Score's own activations for an imported plugin, computed in-process: the reference of the parity check.

Runs under a Python that has brainscore-vision installed (e.g. the venv that ``perf/parity_brainscore.py
--setup-venv`` makes, plus the plugin's own packages), never under cortexbox's, and imports nothing of cortexbox::

    /tmp/bs-venv/bin/python perf/brainscore_reference.py PROJECT OUT.npz IMAGE.png...

PROJECT is the folder ``cortexbox import brainscore`` wrote. Its ``plugin/`` folder is put first on
``brainscore_vision.models.__path__`` (so the very files the image carries are imported), its ``bs_shims.py`` is
installed as in the image, the generators are seeded with its seed, and the registry entry builds the
``ModelCommitment``. Then ``commitment.activations_model(paths, layers=commitment.layers)``, Brain-Score's public
call (what ``LayerMappedModel.look_at`` runs), gives a NeuroidAssembly; each layer's neuroids, in the order
Brain-Score flattened them, are saved as ``OUT.npz[layer]`` (stimuli x neuroids, rows in the order of the images),
with ``OUT.json``: layers, ``visual_degrees()``, the region-layer map (when the plugin commits one), the stimulus
paths as the assembly has them, and the library versions.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    project, out, images = Path(argv[0]), Path(argv[1]), [str(Path(p).resolve()) for p in argv[2:]]
    config = json.loads((project / "brainscore_plugin.json").read_text())
    os.environ.setdefault("RESULTCACHING_DISABLE", "1")
    os.environ["BS_INSTALL_DEPENDENCIES"] = "no"
    os.environ.setdefault("TQDM_DISABLE", "1")
    sys.path.insert(0, str(project))
    import bs_shims

    bs_shims.install_cv2_stub()
    bs_shims.declare_torchvision_ops()
    import brainscore_vision.models
    import numpy as np

    brainscore_vision.models.__path__.insert(0, str(project / "plugin"))
    importlib.import_module(f"brainscore_vision.models.{config['plugin_dir']}")
    seed = int(config["seed"])
    import random

    random.seed(seed)
    np.random.seed(seed)
    if importlib.util.find_spec("torch") is not None:
        import torch

        torch.manual_seed(seed)
    commitment = brainscore_vision.model_registry[config["identifier"]]()
    layers = [str(layer) for layer in commitment.layers]
    assembly = commitment.activations_model(images, layers=layers)
    arrays = {}
    for layer in layers:
        arrays[layer] = np.asarray(assembly.values[:, assembly["layer"].values == layer])
    np.savez(out, **arrays)
    mapping = getattr(getattr(commitment, "layer_model", None), "region_layer_map", None)
    regions = dict(dict.items(mapping)) if isinstance(mapping, dict) and type(mapping).__name__ != "RegionLayerMap" else {}
    import PIL

    meta = {
        "layers": layers,
        "visual_degrees": float(commitment.visual_degrees()),
        "region_layer_map": regions,
        "stimulus_paths": [str(p) for p in assembly["stimulus_path"].values],
        "dtypes": {layer: str(arrays[layer].dtype) for layer in layers},
        "versions": {"brainscore_vision": importlib.metadata.version("brainscore-vision"), "numpy": np.__version__,
                     "pillow": PIL.__version__,
                     "torch": importlib.metadata.version("torch") if importlib.util.find_spec("torch") else None},
        "shims": {"cv2_stub": "cv2" in sys.modules and type(sys.modules["cv2"]).__name__ == "_Missing",
                  "torchvision_ops_declared": bool(bs_shims._KEEP)},
    }
    out.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
