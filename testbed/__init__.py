"""Network-emulation testbed for device/cloud collaborative DNN inference."""

__version__ = "0.1.0"
