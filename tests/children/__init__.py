"""Small scripts that stand in for FL processes in tests."""
