"""Drop-in layers over the same engine, named after the library they replace (replace its import prefix).

- :mod:`pycam_fast.compat.torchcam`: TorchCAM 0.5.0 (``torchcam``), its numbers quirks included.
- :mod:`pycam_fast.compat.pytorch_grad_cam`: pytorch-grad-cam 1.5.7 (``pytorch_grad_cam``).
- :mod:`pycam_fast.compat.captum`: Captum 0.9's Grad-CAM family (``captum.attr``).
- :mod:`pycam_fast.compat.xplique`: an Xplique-style ``GradCAM(...).explain(inputs, targets)``.
"""
