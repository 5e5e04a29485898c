"""The verl bridge: convert data to verl parquet, check that rewards score it, launch verl."""
