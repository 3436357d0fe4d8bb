"""grad-cam 1.5.7's ``pytorch_grad_cam.metrics``: CAM quality metrics, batched.

The package itself exports nothing, as grad-cam's: import from its modules ``cam_mult_image``,
``perturbation_confidence``, ``road`` and ``arcc``.
"""
