"""The Pipedreamer workflow engine: spec → compiled DAG → executor → result."""
