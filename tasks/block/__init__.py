"""Block: users' vaults and the UPM snapshots, at most one active per model family."""
