"""synctalk: audio-driven talking-head digital doubles.

Importing this package is cheap: heavy modules (torch, mediapipe, cv2) load only where used.
"""

__version__ = "0.1.0"
