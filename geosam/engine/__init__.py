"""Training (``do_train``) and evaluation (``inference``) loops on pytorch-ignite, and metrics.

Submodules are imported directly (``geosam.engine.trainer``, ``geosam.engine.inference``,
``geosam.engine.metrics``): each needs torch, and the CLI imports them only in the commands
that train or evaluate.
"""
