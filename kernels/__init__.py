"""Triton kernels of the fused CAM ops (shipped as ``pycam_fast.kernels``): launchers only.

One kernel family per file (``cam_step.py``, ``grad_weights.py``, ``masked_inputs.py``; shared indexing helpers in
``_common.py``). Each public launcher takes its op's arguments positionally in schema order
(:mod:`pycam_fast.ops.schemas`) and only launches: which inputs reach it, the fallbacks and the ``torch.library``
registration are the ``triton`` backend's business (:mod:`pycam_fast.ops.triton`). Importing this package imports
Triton; ``pycam_fast`` itself only does so when the backend is first used.
"""
