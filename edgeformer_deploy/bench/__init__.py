"""On-device benchmark (``edgeformer-bench``): ``runner`` (board side: numpy + ``runtime``, no torch),
``report`` (matplotlib) and ``compare`` (export + run). Kept import-free: import the submodule you need."""
