"""What a study searches: the contending optimizers and their search spaces."""
