"""Face tracking shared by preprocessing, sync scoring and evaluation (MediaPipe Face Landmarker)."""
