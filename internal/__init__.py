"""movieservice: a gRPC MovieService over MongoDB's sample_mflix with Redis in front."""
