"""Bolt: UPM adapters, each serving its family from an active snapshot."""
