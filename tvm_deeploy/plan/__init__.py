"""Planning: the `plan_offloads` pass (its decisions as each offloaded function's "deeploy.plan"), engine
choice, tiling for L1 and static memory planning, as plain data."""
