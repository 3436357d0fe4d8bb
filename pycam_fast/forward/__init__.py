"""Forward machinery shared by the methods, the Explainer and the drop-in layers (below them, above the ops).

- :mod:`.private_copy`: the inference-optimised private model copy (``FastModel``), kept in step with the model.
- :mod:`.tail`: the model tail after a target layer (torch.fx split) and the closed-form linear head.
- :mod:`.tail_forward`: a forward that records an autograd graph of the tail only.
- :mod:`.explained`: the explained forward of an explainer (tail-only, closed-form gradients, the copy when it can).
- :mod:`.scoring`: Score-CAM family masked forwards, batched over samples and channels.
- :mod:`.ablation`: ablated-channel forwards, batched.
- :mod:`.chunking`: chunk sizes from a memory budget, out-of-memory retries.
"""
