"""The machines a study runs on: connecting to Ray, whether trials fit, storage, shipping code."""
