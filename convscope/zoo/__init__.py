"""Small models that convscope trains and ships itself, for offline demonstrations and tests."""
