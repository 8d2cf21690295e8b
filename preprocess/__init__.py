"""Video → subject directory (docs/dataset.md). One module per step; `synctalk preprocess` chains them.

May use synctalk.io, synctalk.config, synctalk.assets and synctalk.data; never training or model code.
"""
