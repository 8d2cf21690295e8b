"""Volume compositing: reference.py (PyTorch spec), ops.py (dispatch + autograd), composite.cu (kernels)."""
