"""koala.core."""
