"""Crown: the policies a UPM activation must pass (drift limits, freezes, approvals)."""
