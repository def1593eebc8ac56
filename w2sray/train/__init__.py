"""Training: the per-worker DeepSpeed loop, its ZeRO config, and the TorchTrainer around it."""
