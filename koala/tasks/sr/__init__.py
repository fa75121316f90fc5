"""koala.tasks.sr."""
