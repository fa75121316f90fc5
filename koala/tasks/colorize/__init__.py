"""koala.tasks.colorize."""
