"""Scripts run *inside* the managed converter environments (they import nothing from this package)."""
