"""koala.tasks."""
