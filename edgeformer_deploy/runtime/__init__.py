"""Board-side inference: numpy + Pillow + one runtime. Imports no torch and nothing from
``edgeformer_deploy.models`` / ``edgeformer_deploy.export``."""
