"""Triton serving: the model logic behind ``triton_models/`` and a launcher for tritonserver."""
