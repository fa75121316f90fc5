"""koala.tasks.colorize.models."""
