"""Training: the loop, stages, checkpoints and logging of `synctalk train` (models come from synctalk.models)."""
