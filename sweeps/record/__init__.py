"""A study's records: its identity, study.json and study.yaml, resume and its trust boundary."""
