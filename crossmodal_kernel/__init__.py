"""The model kernel: what serving, indexing and training all need from a model, and nothing more.

- :mod:`~crossmodal_kernel.specs`: model spec strings and their parsing;
- :mod:`~crossmodal_kernel.loading`: one factory from a spec to a loaded model;
- :mod:`~crossmodal_kernel.builtin`: the offline LiT models (``builtin:lit-mini[-spp]``, ``test:tiny``);
- :mod:`~crossmodal_kernel.hub`: pretrained downloads, offline mode and its errors;
- :mod:`~crossmodal_kernel.checkpoints`: saving, exporting and reading weights;
- :mod:`~crossmodal_kernel.encoder`: images and texts in, unit vectors out;
- :mod:`~crossmodal_kernel.images`: the one image decoder (with the one decompression-bomb guard);
- :mod:`~crossmodal_kernel.atomic`: the one way a file or folder is published;
- :mod:`~crossmodal_kernel.modality`: image or text;
- :mod:`~crossmodal_kernel.distributed`: joining a torchrun process group.

Dependencies point into this package from ``index``, ``training`` and ``app``; it imports none of them.
"""
