"""koala.tasks.codec."""
