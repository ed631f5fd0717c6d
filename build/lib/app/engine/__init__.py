"""The engine: parameter resolution, definition validation and run execution."""
