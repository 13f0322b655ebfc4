"""Host-side export: lowering of the reference models and conversion to deployable formats."""
