"""The data plane: shards in, clips out, tokens written, tokens read back for training.

Stages run in a plain process; `jobs` decides where they run.
"""
