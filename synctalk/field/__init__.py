"""Per-sample fields: (points, directions, audio, eyes) → density, colour, extras. Knows no rays or pixels.

encoding.py holds the input encodings (tri-plane hash, 3D hash, frequency, spherical harmonics). Importing this
package imports torch but compiles nothing: kernels build on first use (cuda_ext.build).
"""

from synctalk.field.encoding import FrequencyEncoding, HashGridEncoding, SHEncoding, TriPlaneHashEncoding

__all__ = ["FrequencyEncoding", "HashGridEncoding", "SHEncoding", "TriPlaneHashEncoding"]
