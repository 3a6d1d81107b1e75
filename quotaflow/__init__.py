"""quotaflow: event-sourced streaming for ML inference with exact token quotas."""

__version__ = "0.1.0"
