"""The CRsAE and the solvers of its lasso (dense unrolled FISTA, working set)."""
