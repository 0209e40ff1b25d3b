"""Local evaluate module; this marker makes setuptools ship the script in wheels."""
