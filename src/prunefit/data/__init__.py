"""Read data sets and prompt files into typed records."""
