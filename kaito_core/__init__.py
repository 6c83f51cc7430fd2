"""kaito: a Python KAITO. The core reconciles Workspaces; plugins bring models and clouds."""

__version__ = "0.1.0"
