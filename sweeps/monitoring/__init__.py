"""Watching a study: live progress lines and the tracking backends (TensorBoard, MLflow, W&B)."""
