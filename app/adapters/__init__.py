"""One adapter per outside system, each with a lifecycle and speaking domain words."""
