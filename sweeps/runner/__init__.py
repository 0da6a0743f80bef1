"""Running a study: planning its trials, one Tune experiment per optimizer, the confirmation stage."""
