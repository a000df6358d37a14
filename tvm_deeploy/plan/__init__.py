"""Planning: engine choice, tiling for L1 and static memory planning, as plain data."""
