"""Early stopping: per-configuration halving, and Ray Tune's ASHA made safe for the study."""
