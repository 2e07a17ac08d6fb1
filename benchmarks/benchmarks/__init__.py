"""The asv suite of idigdask: one module per stage of the route (see ../README.md)."""
