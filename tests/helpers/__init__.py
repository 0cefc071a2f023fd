"""What tests share besides fixtures: plain functions and constants, imported like any module, never from a conftest."""
