"""The sort, one module per stage; `engine.pipeline.run.run_sort` lists them in order."""
