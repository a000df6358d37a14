"""`tvm-deeploy ablate`: a grid of builds × compilers × memory sizes, run in parallel, cached, tabled, plotted.

    rows = tvm_deeploy.ablate.run_grid("grid.toml", "out", jobs=2)   # or scheduler="tcp://host:8786"
"""
