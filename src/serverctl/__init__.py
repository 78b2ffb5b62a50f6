"""ServerCTL: the control plane for HAProxy server pools."""

__version__ = "0.1.0"
