"""3D Gaussian splatting rasterizer: reference.py (dense PyTorch spec); the tile rasterizers follow its maths."""
